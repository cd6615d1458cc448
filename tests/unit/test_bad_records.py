"""Corrupt or misplaced records and half-written aggregations (docs/faults.md, item 4).

Each test injects the fault for real: a record file copied over another cell's path, a
column written with the wrong type, an output folder that cannot be created, a disk that
fills mid-write; and checks what the user sees and that no stale and fresh outputs mix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from small_fs import small_fs
from test_aggregate import CELLS, _load_script, make_record

from effbench.aggregate.stage import aggregate_stage
from effbench.aggregate.summary import write_summary
from effbench.atomic import NoSpaceError
from effbench.record import SchemaError


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
