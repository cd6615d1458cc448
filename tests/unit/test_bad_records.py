"""Corrupt or misplaced records and half-written aggregations (docs/faults.md, item 4).

Each test injects the fault for real: a record file copied over another cell's path, a
column written with the wrong type, an output folder that cannot be created, a disk that
fills mid-write; and checks what the user sees and that no stale and fresh outputs mix.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from small_fs import small_fs
from test_aggregate import CELLS, T0, _load_script, make_record

from effbench.aggregate.stage import aggregate_stage
from effbench.aggregate.summary import write_summary
from effbench.atomic import NoSpaceError
from effbench.measure.figure import Figure
from effbench.record import SCHEMA_VERSION, SchemaError, read_record, write_record


def _records(d: Path) -> dict[tuple[str, str], Path]:
    return {(s, t): make_record(d, s, t, i, metrics=m) for i, ((s, t), m) in enumerate(CELLS.items())}


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_record_copied_over_another_cells_path_is_refused(tmp_path: Path) -> None:
    recs = _records(tmp_path / "results")
    shutil.copyfile(recs[("xs", "mqa")], recs[("xs", "gqa")])  # the gqa cell's record is now mqa's
    with pytest.raises(SchemaError, match=rf"{recs[('xs', 'gqa')]}: the record is pretrain/xs/mqa "
                                          r"but its path says pretrain/xs/gqa"):
        aggregate_stage("pretrain", recs.values(), tmp_path / "out")


def test_a_record_whose_cell_disagrees_with_its_keys_is_refused(tmp_path: Path) -> None:
    p = make_record(tmp_path / "results", "xs", "gqa", 0, metrics=CELLS[("xs", "gqa")])
    t = pq.read_table(p)
    pq.write_table(t.set_column(t.schema.get_field_index("cell"), "cell", pa.array(["xs/mha"])), p)
    with pytest.raises(SchemaError, match=r"its cell column says 'xs/mha' but its keys \(size, technique\) make 'xs/gqa'"):
        aggregate_stage("pretrain", [p], tmp_path / "out")


def test_the_same_run_in_two_files_is_refused_but_one_file_named_twice_is_read_once(tmp_path: Path) -> None:
    recs = _records(tmp_path / "results")
    copy = tmp_path / "archive" / "pretrain" / "xs" / "gqa" / "record.parquet"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(recs[("xs", "gqa")], copy)
    with pytest.raises(SchemaError, match=rf"{copy}: run 'pretrain/xs/gqa/0' was already read from"):
        aggregate_stage("pretrain", [*recs.values(), copy], tmp_path / "out")
    m = aggregate_stage("pretrain", [*recs.values(), recs[("xs", "gqa")]], tmp_path / "out")
    assert m["rows"] == len(CELLS) and m["provenance"]["runs"] == len(CELLS)


def test_bad_records_can_be_skipped_and_are_listed_in_the_table_manifest_and_summary(tmp_path: Path) -> None:
    recs = _records(tmp_path / "results")
    shutil.copyfile(recs[("xs", "mqa")], recs[("xs", "gqa")])
    t = pq.read_table(recs[("s", "gqa")])
    i = t.schema.get_field_index("params_total")
    pq.write_table(t.set_column(i, "params_total", pa.array(["50M"])), recs[("s", "gqa")])
    out = tmp_path / "out"
    argv = ["--stage", "pretrain", "--out", str(out), "--records", *map(str, recs.values())]
    with pytest.raises(SchemaError):  # not asked to skip: the first bad record fails the aggregation
        _load_script("aggregate").main(argv)
    assert not out.exists() or not any(out.iterdir())
    assert _load_script("aggregate").main([*argv, "--skip-bad-records"]) == 0
    m = json.loads((out / "pretrain.manifest.json").read_text())
    assert m["cells"] == ["xs/mqa", "xs/mla"]
    assert [(x["cell"], x["path"]) for x in m["left_out"]] == [
        ("pretrain/xs/gqa", str(recs[("xs", "gqa")])), ("pretrain/s/gqa", str(recs[("s", "gqa")]))]
    assert "column params_total is string, the schema says int64" in m["left_out"][1]["reason"]
    md = (out / "tables" / "pretrain.md").read_text()
    assert "- left out: pretrain/xs/gqa — the record is pretrain/xs/mqa but its path says pretrain/xs/gqa" in md
    assert "- left out: pretrain/s/gqa — column params_total is string" in md
    assert "left out: pretrain/s/gqa" in (out / "tables" / "pretrain.tex").read_text()
    summary = write_summary([out / "pretrain.manifest.json"], out).read_text()
    assert "**Left out**" in summary and "- pretrain/s/gqa — column params_total is string" in summary


def _old_set(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A previous aggregation's outputs: one cell that ran out of memory (no plots)."""
    out = tmp_path / "out"
    aggregate_stage("pretrain", [make_record(tmp_path / "old", "xs", "moe", 9, status="oom")], out)
    return out, _snapshot(out)


def test_an_aggregation_failing_while_publishing_leaves_the_previous_outputs_untouched(tmp_path: Path) -> None:
    out, before = _old_set(tmp_path)
    (out / "plots").write_text("not a folder\n")  # the new plots cannot be placed
    with pytest.raises(FileExistsError):
        aggregate_stage("pretrain", _records(tmp_path / "results").values(), out)
    assert _snapshot(out) == {**before, "plots": b"not a folder\n"}
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging folder left


def test_an_aggregation_filling_the_disk_mid_write_leaves_the_previous_outputs_untouched(tmp_path: Path) -> None:
    recs = _records(tmp_path / "results")
    with small_fs(tmp_path / "disk", "2m") as disk:
        out, before = _old_set(disk)
        filler = disk / "filler"
        free = shutil.disk_usage(disk).free
        filler.write_bytes(b"\0" * (free - 48 * 1024))  # room for the tables, not for the plots
        with pytest.raises(NoSpaceError) as failed:
            aggregate_stage("pretrain", recs.values(), out)
        assert _snapshot(out) == before  # not one fresh table beside the stale plots and manifest
        assert f"no space left on {out}/.aggregate-pretrain.tmp/plots while writing" in str(failed.value)
        filler.unlink()
        m = aggregate_stage("pretrain", recs.values(), out)  # with room again, the new set replaces the old
        assert m["rows"] == len(CELLS) and m["plots"]
        assert sorted(_snapshot(out)) == sorted([*m["outputs"], "pretrain.manifest.json"])


def test_outputs_of_the_previous_set_that_the_new_one_lacks_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = aggregate_stage("pretrain", _records(tmp_path / "results").values(), out)
    assert first["plots"]
    aggregate_stage("pretrain", [make_record(tmp_path / "old", "xs", "moe", 9, status="oom")], out)
    assert not any((out / p["png"]).exists() for p in first["plots"])  # no stale plot beside the new table


# --- impossible values (issue #24, item 4): the reader checks what the writer checks -----------------


def _rewrite(p: Path, column: str, values: list, type_: pa.DataType | None = None) -> None:
    """Rewrite one column of a record file by hand (another tool, a bad merge, a hand edit)."""
    t = pq.read_table(p)
    i = t.schema.get_field_index(column)
    pq.write_table(t.set_column(i, column, pa.array(values, type_ or t.schema.field(i).type)), p)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("status", "banana", r"column status 'banana' not in \('ok', 'oom', 'failed'\)"),
    ("ppl", -3.0, r"column ppl is -3\.0, below its minimum 1"),
    ("ppl", 0.5, r"column ppl is 0\.5, below its minimum 1"),
    ("amu_gb", -1.0, r"column amu_gb is -1\.0, below its minimum 0"),
    ("val_loss", float("nan"), r"column val_loss is nan, not a finite number"),
    ("al_s_per_iter", float("inf"), r"column al_s_per_iter is inf, not a finite number"),
    ("pcu_frac", 1.5, r"column pcu_frac is 1\.5, above its maximum 1"),
    ("params_total", -5, r"column params_total is -5, below its minimum 0"),
    ("device_kind", "tpu", r"column device_kind 'tpu' not in"),
    ("schema_version", 99, rf"column schema_version is 99 but the file's schema version is {SCHEMA_VERSION}"),
    ("amu_gb__ci_low", 50.0, r"column amu_gb__ci_low 50\.0 is above amu_gb__ci_high"),
])
def test_an_impossible_value_is_refused_on_read_naming_the_file_and_the_column(
        tmp_path: Path, column: str, value: object, message: str) -> None:
    p = make_record(tmp_path / "results", "xs", "gqa", 0, metrics=CELLS[("xs", "gqa")],
                    intervals={"amu_gb": (44.0, 45.5)},
                    extra={"val_loss": Figure.of(2.09, "validation_mean_nll"),
                           "pcu_frac": Figure.of(0.5, "psutil_cpu_percent")})
    read_record(p)  # as written: valid
    _rewrite(p, column, [value])
    with pytest.raises(SchemaError, match=rf"^{re.escape(str(p))}: .*{message}"):
        read_record(p)
    with pytest.raises(SchemaError, match=re.escape(str(p))):  # the aggregation fails on it, naming it
        aggregate_stage("pretrain", [p], tmp_path / "out")


def test_what_the_writers_produce_still_reads(tmp_path: Path) -> None:
    """Nulls with their reasons, an interval reaching below zero around a non-negative figure
    (t intervals are not clipped), a serving record's runtime memory below zero (AMU is a time
    average, weights and KV the engine's own counts), an oom record without figures."""
    p = make_record(tmp_path / "results", "xs", "gqa", 0, metrics=(8.0, 0.01, 0.1, 2e-4, None),
                    intervals={"amu_gb": (-0.02, 0.04), "al_s_per_iter": (0.05, 0.15)},
                    extra={"val_loss": Figure.missing("evaluation skipped"), "train_loss": Figure.of(0.0, "x")})
    (row,) = read_record(p).to_pylist()
    assert row["amu_gb__ci_low"] == -0.02 and row["aec_w"] is None and row["val_loss__missing"]
    oom = make_record(tmp_path / "results", "xs", "moe", 1, status="oom")
    assert read_record(oom).column("status").to_pylist() == ["oom"]
    serve = tmp_path / "serve.parquet"
    write_record(serve, {**_serving_row(), "mem_runtime_gb": Figure.of(-0.3, "amu-weights-kv")})
    assert read_record(serve).column("mem_runtime_gb").to_pylist() == [-0.3]


def test_the_writer_refuses_the_same_values(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"column ppl is 0\.5, below its minimum 1"):
        make_record(tmp_path, "xs", "gqa", 0, metrics=(0.5, 1.0, 0.1, 2e-4, 300.0))
    with pytest.raises(SchemaError, match=r"column engine 'tgi' not in"):
        write_record(tmp_path / "r.parquet", {**_serving_row(), "engine": "tgi"})


def _serving_row() -> dict:
    return {
        "stage": "inference", "cell": "m/int4/c1", "run_id": "inference/m/int4/c1/0", "status": "ok",
        "model": "m", "precision": "int4", "load_point": "c1", "engine": "vllm", "quant_method": "gptq",
        "seconds": 3.0, "params_total": 1000, "settings_json": "{}", "settings_hash": "h", "config_hash": "c",
        "code_version": "v", "library_versions_json": "{}", "host": "h", "device_kind": "cpu",
        "device_name": "cpu", "device_count": 1, "seed": 1, "started_at": T0, "ended_at": T0,
    }
