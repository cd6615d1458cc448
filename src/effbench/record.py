"""The one record schema: one Parquet row per run, and a long Parquet of its raw samples.

This module and :mod:`effbench.record_columns` (the columns) are the single place the schema is defined; docs/record-schema.md is
generated from it (``python -m effbench.record > docs/record-schema.md``) and a test
checks that the two agree. Column names carry their unit. A measured figure ``x`` has
two companions: ``x__source`` (where it came from) and ``x__missing`` (why it is null,
null when measured), so a missing value is never confused with a zero.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .measure.figure import Figure

from .record_columns import (  # noqa: F401  (re-exported: the stages import them from here)
    ALL, B, CI_SUFFIXES, COLUMNS, DEVICE_KINDS, ENGINES, FIDELITY_VERDICTS, FT, IT, PRECISIONS, PT, QT,
    QUALITY_LABELS, QUANT_METHODS, RECORD_FILE, S, SAMPLE_COLUMNS, SAMPLES_FILE, SCHEMA_VERSION, SIDE_CAR, STAGES,
    STATUSES, WINDOW_FIGURES, Column, F, I, T,
)


def _arrow_schema() -> pa.Schema:
    fields: list[pa.Field] = []
    for c in COLUMNS:
        fields.append(pa.field(c.name, c.type))
        if c.figure:
            fields.append(pa.field(c.name + "__source", S))
            fields.append(pa.field(c.name + "__missing", S))
            fields += [pa.field(c.name + s, t) for s, t in CI_SUFFIXES]
    return pa.schema(fields, metadata={b"effbench_schema_version": str(SCHEMA_VERSION).encode()})


RECORD_SCHEMA = _arrow_schema()
SAMPLES_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in SAMPLE_COLUMNS])
_BY_NAME = {c.name: c for c in COLUMNS}
FIGURE_COLUMNS = tuple(c.name for c in COLUMNS if c.figure)


class SchemaError(ValueError):
    pass


def flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """Expand Figure values into their value / __source / __missing columns."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Figure):
            out.update(v.columns(k))
        else:
            out[k] = v
    return out


def _value_problems(name: str, v: Any, c: Column) -> list[str]:
    """What is wrong with one non-null value of column ``c`` (under ``name``)."""
    if c.enum:
        return [] if v in c.enum else [f"column {name} {v!r} not in {c.enum}"]
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return []  # a wrong type is Arrow's to refuse
    if not math.isfinite(v):
        return [f"column {name} is {v}, not a finite number"]
    if c.lo is not None and v < c.lo:
        return [f"column {name} is {v}, below its minimum {c.lo:g}"]
    if c.hi is not None and v > c.hi:
        return [f"column {name} is {v}, above its maximum {c.hi:g}"]
    return []


def _interval_problems(name: str, row: Mapping[str, Any]) -> list[str]:
    lo, hi, n = (row.get(name + s) for s in ("__ci_low", "__ci_high", "__ci_n"))
    out = [f"column {name}{s} is {x}, not a finite number" for s, x in (("__ci_low", lo), ("__ci_high", hi))
           if isinstance(x, numbers.Real) and not math.isfinite(x)]
    if not out and isinstance(lo, numbers.Real) and isinstance(hi, numbers.Real) and lo > hi:
        out.append(f"column {name}__ci_low {lo} is above {name}__ci_high {hi}")
    if isinstance(n, numbers.Real) and n < 1:
        out.append(f"column {name}__ci_n is {n}, below its minimum 1")
    return out


def problems(row: Mapping[str, Any], version: int = SCHEMA_VERSION) -> list[str]:
    """Every problem with a record row (flattened), each naming its column: the row's identity,
    the columns its stage and status need, and each value against its column's enum and range.
    ``version``: what the row's schema_version must be (a file's: its metadata's)."""
    out: list[str] = []
    names = set(RECORD_SCHEMA.names)
    unknown = sorted(set(row) - names)
    if unknown:
        out.append(f"unknown columns {unknown}")
    stage, status = row.get("stage"), row.get("status")
    out += [f"column {n} is missing" for n in ("stage", "status") if row.get(n) is None]
    if row.get("schema_version") not in (None, version):
        out.append(f"column schema_version is {row.get('schema_version')} but the file's schema version is "
                        f"{version}")
    for c in COLUMNS:
        if row.get(c.name) is not None and c.name != "schema_version":
            out += _value_problems(c.name, row[c.name], c)
        if c.figure:
            out += _interval_problems(c.name, row)
        applies = stage in c.stages
        if not applies and row.get(c.name) is not None:
            out.append(f"column {c.name} does not apply to stage {stage}")
        if applies and c.required and status == "ok" and row.get(c.name) is None:
            out.append(f"required column {c.name} is missing")
        reported_null = c.name in row and row[c.name] is None
        if c.figure and applies and status == "ok" and reported_null and not row.get(c.name + "__missing"):
            out.append(f"figure {c.name} is null without a reason in {c.name}__missing")
    if status in STATUSES and status != "ok" and not row.get("status_detail"):
        out.append(f"status {status} needs a status_detail")
    return out


def validate(row: Mapping[str, Any]) -> None:
    """Raise SchemaError naming every problem with a record row (already flattened)."""
    found = problems(row)
    if found:
        raise SchemaError("record does not match schema v%d: %s" % (SCHEMA_VERSION, "; ".join(found)))


def write_record(path: Path, values: Mapping[str, Any]) -> None:
    """Validate and atomically write one record row (a killed job never leaves a half file)."""
    row = {"schema_version": SCHEMA_VERSION, **flatten(values)}
    validate(row)
    table = pa.Table.from_pylist([{n: row.get(n) for n in RECORD_SCHEMA.names}], schema=RECORD_SCHEMA)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


def write_samples(path: Path, run_id: str, rows: list[dict[str, Any]]) -> None:
    data = [{**r, "run_id": run_id} for r in rows]
    table = pa.Table.from_pylist([{n: r.get(n) for n in SAMPLES_SCHEMA.names} for r in data], schema=SAMPLES_SCHEMA)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


def read_record(path: Path) -> "pa.Table":
    """Read one record file as the current schema. A record of an earlier schema version is read
    with the columns it predates set to null (with a warning naming the file); an unreadable
    file, a newer or missing version, a missing required column, a column of the wrong type or a
    row the writer would refuse (:func:`problems`: an enum, a range, a NaN, a schema_version other
    than the file's) is a SchemaError naming the file (and the column)."""
    try:
        t = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise SchemaError(f"{path}: not a readable Parquet record: {e}") from e
    version = (t.schema.metadata or {}).get(b"effbench_schema_version")
    if version is None or not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise SchemaError(f"{path}: record schema version {version!r}, this code reads up to {SCHEMA_VERSION}")
    required = {c.name for c in COLUMNS if c.required}
    missing = [n for n in RECORD_SCHEMA.names if n not in t.schema.names]
    if set(missing) & required:
        raise SchemaError(f"{path}: required columns missing {sorted(set(missing) & required)}")
    if missing:
        warnings.warn(f"{path}: a schema v{int(version)} record, read as v{SCHEMA_VERSION}: "
                      f"{len(missing)} newer columns are null", stacklevel=3)
    columns, wrong = [], []
    for f in RECORD_SCHEMA:
        if f.name in missing:
            columns.append(pa.nulls(t.num_rows, f.type))
            continue
        col = t.column(f.name)
        try:  # a column Arrow can cast losslessly (e.g. int64 -> double) is taken as it is
            columns.append(col if col.type == f.type else col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            wrong.append(f"column {f.name} is {col.type}, the schema says {f.type} ({e})")
    if wrong:
        raise SchemaError(f"{path}: " + "; ".join(wrong))
    table = pa.Table.from_arrays(columns, schema=RECORD_SCHEMA)
    present = [n for n in RECORD_SCHEMA.names if n not in missing]  # a column it predates is not reported
    for row in table.select(present).to_pylist():
        # As the writer saw it: the values it was given (it writes null for a column it was not).
        found = problems({k: v for k, v in row.items() if v is not None}, int(version))
        if found:
            raise SchemaError(f"{path}: " + "; ".join(found))
    return table


def read_records(paths: Iterable[Path]) -> "pa.Table":
    """Read and check records (see :func:`read_record`), one table of all their rows."""
    tables = [read_record(p) for p in paths]
    return pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()


def markdown() -> str:
    """The schema as a Markdown document (docs/record-schema.md)."""
    lines = [
        f"# Record schema (version {SCHEMA_VERSION})",
        "",
        "Generated by `python -m effbench.record`; do not edit by hand. Each run writes one row to",
        f"`{RECORD_FILE}` and its raw samples to `{SAMPLES_FILE}`. Every column marked *figure* has two",
        "companions: `<name>__source` (where the value came from, e.g. `nvml_energy_counter`,",
        "`psutil_pss`, `wall_clock`) and `<name>__missing` (why it is null; null when measured), and",
        "its 95 % interval: `<name>__ci_low`, `<name>__ci_high` (double), `<name>__ci_n` (int64, the",
        "independent replicates behind it) and `<name>__ci_method` (e.g. `t_repeats`, `ratio_batch_means_k=8`,",
        "`delta_method`); all four are null when the figure's noise was not measured (docs/noise.md).",
        "*required* columns are non-null in every `ok` record of the stages listed.",
        "",
        "| column | type | stages | required | figure | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for c in COLUMNS:
        stages = "all" if c.stages == ALL else ", ".join(s for s in STAGES if s in c.stages)
        lines.append(
            f"| `{c.name}` | {c.type} | {stages} | {'yes' if c.required else ''} | {'yes' if c.figure else ''} | {c.doc} |"
        )
    lines += ["", f"## {SAMPLES_FILE}", "", "| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {c.doc} |" for c in SAMPLE_COLUMNS]
    return "\n".join(lines) + "\n"


def settings_json(settings: Mapping[str, Any]) -> str:
    """The one canonical text of a cell's settings: the record's ``settings_json`` (hashed into
    ``settings_hash``), the resume checkpoint's key and the stage scripts' ``--settings``."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


if __name__ == "__main__":
    sys.stdout.write(markdown())
