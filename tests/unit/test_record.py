"""The record schema: validation, atomic writes, version checks, and its generated doc."""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from effbench import record
from effbench.measure.figure import Figure

NOW = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)


def ok_row(**over):
    row = {
        "stage": "pretrain", "cell": "xs/gqa", "run_id": "r1", "status": "ok", "size": "xs", "technique": "gqa",
        "seconds": 1.5, "params_total": 1000, "settings_json": "{}", "settings_hash": "h", "config_hash": "c",
        "code_version": "v", "library_versions_json": "{}", "host": "h", "device_kind": "cpu",
        "device_name": "cpu", "device_count": 1, "seed": 1, "started_at": NOW, "ended_at": NOW,
        "amu_gb": Figure.of(1.25, "psutil_rss"),
        "aec_w": Figure.missing("no energy counter on this host"),
    }
    row.update(over)
    return row


def test_round_trip_keeps_sources_and_reasons(tmp_path):
    p = tmp_path / "record.parquet"
    record.write_record(p, ok_row())
    t = record.read_records([p]).to_pylist()[0]
    assert t["amu_gb"] == 1.25 and t["amu_gb__source"] == "psutil_rss" and t["amu_gb__missing"] is None
    assert t["aec_w"] is None and t["aec_w__missing"] == "no energy counter on this host"
    assert t["schema_version"] == record.SCHEMA_VERSION


@pytest.mark.parametrize(
    "over, message",
    [
        ({"bogus": 1}, "unknown columns ['bogus']"),
        ({"stage": "pretraining"}, "stage 'pretraining'"),
        ({"status": "done"}, "status 'done'"),
        ({"params_total": None}, "required column params_total"),
        ({"accuracy": 0.5}, "column accuracy does not apply to stage pretrain"),
        ({"ppl": None}, "figure ppl is null without a reason"),
        ({"status": "oom"}, "status oom needs a status_detail"),
    ],
)
def test_invalid_rows_are_refused_with_the_column_named(tmp_path, over, message):
    with pytest.raises(record.SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        record.write_record(tmp_path / "r.parquet", ok_row(**over))
    assert not (tmp_path / "r.parquet").exists()


def test_oom_record_needs_no_metrics(tmp_path):
    p = tmp_path / "r.parquet"
    row = {k: v for k, v in ok_row().items() if k not in ("params_total", "amu_gb", "aec_w")}
    record.write_record(p, {**row, "status": "oom", "status_detail": "CUDA out of memory; tried mb=64"})
    assert record.read_records([p]).column("status").to_pylist() == ["oom"]


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "r.parquet"
    record.write_record(p, ok_row(seconds=1.0))

    def boom(table, where):
        Path(where).write_bytes(b"half a parquet")
        raise KeyboardInterrupt  # the job is killed mid-write

    monkeypatch.setattr(record.pq, "write_table", boom)
    with pytest.raises(KeyboardInterrupt):
        record.write_record(p, ok_row(seconds=2.0))
    assert record.read_records([p]).column("seconds").to_pylist() == [1.0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.parquet"]  # no temp file left


def test_reader_refuses_newer_versions_and_reads_older_ones(tmp_path):
    p = tmp_path / "r.parquet"
    record.write_record(p, ok_row())
    t = pq.read_table(p)
    pq.write_table(t.replace_schema_metadata({b"effbench_schema_version": b"99"}), p)
    with pytest.raises(record.SchemaError, match="schema version b'99'"):
        record.read_records([p])
    # An earlier version lacked some optional columns: they read as null, with a warning.
    older = t.drop_columns(["slurm_gpus", "params_trainable_frac"])
    older = older.set_column(older.schema.get_field_index("schema_version"), "schema_version", pa.array([1]))
    pq.write_table(older.replace_schema_metadata({b"effbench_schema_version": b"1"}), p)
    with pytest.warns(UserWarning, match="schema v1 record"):
        (row,) = record.read_records([p]).to_pylist()
    assert row["slurm_gpus"] is None and row["amu_gb"] == 1.25
    pq.write_table(t.drop_columns(["host"]), p)
    with pytest.raises(record.SchemaError, match=r"required columns missing \['host'\]"):
        record.read_records([p])


def test_schema_doc_is_generated_from_the_code():
    doc = Path(__file__).resolve().parents[2] / "docs" / "record-schema.md"
    assert doc.read_text() == record.markdown(), "regenerate: python -m effbench.record > docs/record-schema.md"


def test_a_column_of_the_wrong_type_names_the_file_and_the_column(tmp_path):
    p = tmp_path / "r.parquet"
    record.write_record(p, ok_row())
    t = pq.read_table(p)
    i = t.schema.get_field_index("seconds")
    # Written by hand (not by write_record): seconds as text Arrow cannot parse as a number.
    pq.write_table(t.set_column(i, "seconds", pa.array(["1.5 s"])), p)
    with pytest.raises(record.SchemaError, match=rf"{p}: column seconds is string, the schema says double"):
        record.read_records([p])


def test_a_truncated_record_names_the_file(tmp_path):
    p = tmp_path / "r.parquet"
    record.write_record(p, ok_row())
    p.write_bytes(p.read_bytes()[:100])  # e.g. a copy cut short
    with pytest.raises(record.SchemaError, match=rf"{p}: not a readable Parquet record"):
        record.read_records([p])
