"""Records → one pandas frame per stage: one row per cell, repeats collapsed, rows ordered.

Repeated runs of a cell (same ``cell``) collapse to one row: when any run is ok, every
figure is the median over the ok runs that measured it (its ``__missing`` reason is kept
only when no ok run measured it; a median of several runs has no interval); otherwise the
latest run's status and detail stand.
``n_runs`` and ``n_ok`` say how many runs a row stands for.

Each record read is checked first: readable and of the schema, at its own cell's path, and a
run not already read from another file. A bad record fails the aggregation naming the file,
or, inside :func:`skipping_bad_records`, is left out and listed (docs/faults.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ..record import CI_SUFFIXES, FIGURE_COLUMNS, RECORD_FILE, RECORD_SCHEMA, SchemaError, read_record
from ..runner import KEY_NAMES
from .specs import StageSpec


@dataclass(frozen=True)
class LeftOut:
    """A bad record left out of the tables on request (``aggregate.skip_bad_records``)."""

    path: str
    cell: str  # the cell its path names (the record itself may be unreadable)
    reason: str

    def note(self) -> str:
        return f"left out: {self.cell} — {self.reason}"


# The records left out so far while skipping is on; None: a bad record is an error.
_LEFT_OUT: ContextVar[list[LeftOut] | None] = ContextVar("effbench_left_out", default=None)


@contextmanager
def skipping_bad_records() -> Iterator[list[LeftOut]]:
    """Within this block every loader leaves a bad record out and lists it (in the list yielded)
    instead of failing; the aggregation notes them in its tables and manifest. Re-entering keeps
    the outer list, so one aggregation reading several record sets lists them all."""
    outer = _LEFT_OUT.get()
    if outer is not None:
        yield outer
        return
    token = _LEFT_OUT.set([])
    try:
        yield _LEFT_OUT.get()  # type: ignore[misc]
    finally:
        _LEFT_OUT.reset(token)


def left_out_so_far() -> list[LeftOut]:
    return list(_LEFT_OUT.get() or [])


def path_cell(path: Path) -> str:
    """The stage/cell a record's path names: the folders between ``results/`` and the file."""
    for stage, keys in KEY_NAMES.items():
        parts = path.parent.parts
        if path.name == RECORD_FILE and len(parts) > len(keys) and parts[-len(keys) - 1] == stage:
            return "/".join(parts[-len(keys) - 1:])
    return str(path)


def check_place(path: Path, table: pa.Table) -> None:
    """A record must sit at ``<stage>/<cell keys...>/record.parquet`` of its own stage and keys,
    and its ``cell`` must be its keys: a record copied over another cell's path is refused."""
    names = dict.fromkeys(k for ks in KEY_NAMES.values() for k in ks)
    for row in table.select(["stage", "cell", *names]).to_pylist():
        keys = KEY_NAMES.get(row["stage"])
        if keys is None:
            raise SchemaError(f"{path}: unknown stage {row['stage']!r}")
        own = "/".join(str(row[k]) for k in keys)
        if row["cell"] != own:
            raise SchemaError(f"{path}: its cell column says {row['cell']!r} but its keys "
                              f"({', '.join(keys)}) make {own!r}")
        expect = [row["stage"], *own.split("/")]
        found = list(path.parent.parts[-len(expect):])
        if path.name != RECORD_FILE or found != expect:
            where = "/".join(found) if path.name == RECORD_FILE else path.name
            raise SchemaError(f"{path}: the record is {'/'.join(expect)} but its path says {where} "
                              f"(records live at <stage>/{'/'.join('<' + k + '>' for k in keys)}/{RECORD_FILE}; "
                              "a record copied over another cell's?)")


def read_stage_records(records: Iterable[Path | str], stage: str) -> pd.DataFrame:
    """Read the given record files (never a glob), one row per run; all must be of ``stage``.

    Each record is checked (readable, of the schema, at its own cell's path, a run not already
    read from another file). A bad record is an error naming the file, unless the caller is
    :func:`skipping_bad_records`: then it is left out and listed."""
    left_out = _LEFT_OUT.get()
    tables: list[pa.Table] = []
    seen_paths: set[Path] = set()
    run_file: dict[str, Path] = {}
    for p in (Path(r) for r in records):
        if p.resolve() in seen_paths:  # the same file named twice is read once
            continue
        seen_paths.add(p.resolve())
        try:
            t = read_record(p)
            check_place(p, t)
            for run in t.column("run_id").to_pylist():
                if run in run_file:
                    raise SchemaError(f"{p}: run {run!r} was already read from {run_file[run]} (a copied record?)")
            run_file.update((run, p) for run in t.column("run_id").to_pylist())
        except SchemaError as e:
            if left_out is None:
                raise
            if not any(x.path == str(p) for x in left_out):
                left_out.append(LeftOut(str(p), path_cell(p), str(e).removeprefix(f"{p}: ")))
            continue
        tables.append(t)
    df = (pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()).to_pandas()
    wrong = df[df["stage"] != stage] if len(df) else df
    if len(wrong):
        cells = ", ".join(f"{s}:{c}" for s, c in zip(wrong["stage"], wrong["cell"]))
        raise ValueError(f"aggregating stage {stage!r} but given records of other stages: {cells}")
    return df.reset_index(drop=True)


def load_frame(records: Iterable[Path | str], spec: StageSpec) -> pd.DataFrame:
    """The stage's rows: one per cell, repeats collapsed, ordered by the spec."""
    return stage_rows(read_stage_records(records, spec.stage), spec)


def stage_rows(raw: pd.DataFrame, spec: StageSpec) -> pd.DataFrame:
    return order_rows(collapse_repeats(raw), spec)


def is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def collapse_repeats(df: pd.DataFrame) -> pd.DataFrame:
    if not len(df):
        out = df.copy()
        out["n_runs"] = pd.Series(dtype="int64")
        out["n_ok"] = pd.Series(dtype="int64")
        return out
    rows: list[pd.Series] = []
    for _, g in df.groupby("cell", sort=False):
        g = g.sort_values("started_at", kind="stable")
        ok = g[g["status"] == "ok"]
        row = (ok if len(ok) else g).iloc[-1].copy()
        if len(ok) > 1:
            for c in FIGURE_COLUMNS:
                vals = ok[c].dropna()
                if len(vals):
                    row[c] = float(vals.median())
                    row[c + "__missing"] = None
                    row[c + "__source"] = ";".join(sorted(set(ok.loc[vals.index, c + "__source"].dropna())))
                    if len(vals) > 1:  # one run's interval does not describe a median of runs
                        row[[c + s for s, _ in CI_SUFFIXES]] = None
        row["n_runs"] = len(g)
        row["n_ok"] = len(ok)
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def order_rows(df: pd.DataFrame, spec: StageSpec) -> pd.DataFrame:
    """Sort by the row keys: a spec's preferred order first, else by model size, then name."""
    if not len(df):
        return df
    sort_cols = []
    tmp = df.copy()
    for k in spec.row_keys:
        preferred = spec.order_of(k)
        if preferred:
            rank = {v: i for i, v in enumerate(preferred)}
            tmp[f"_o_{k}"] = [rank.get(v, len(rank)) for v in tmp[k]]
        else:
            sizes = tmp.groupby(tmp[k].fillna(""))[spec.band_of].min()
            tmp[f"_o_{k}"] = [_num(sizes.get("" if is_missing(v) else v)) for v in tmp[k]]
        tmp[f"_n_{k}"] = [natural_key(v) for v in tmp[k].fillna("").astype(str)]
        sort_cols += [f"_o_{k}", f"_n_{k}"]
    tmp = tmp.sort_values(sort_cols + ["cell"], kind="stable")
    return tmp.drop(columns=[c for c in tmp.columns if c.startswith(("_o_", "_n_"))]).reset_index(drop=True)


def natural_key(name: str) -> str:
    """A sort key ordering the numbers inside a name by value: c4 before c16, poisson@4.5 before
    poisson@10 (a swept load point is ``<name>@<rate>``)."""
    return re.sub(r"\d+(?:\.\d+)?", lambda m: f"{float(m.group()):020.6f}", name)


def _num(v: Any) -> float:
    return math.inf if is_missing(v) else float(v)


def group_keys(df: pd.DataFrame, spec: StageSpec) -> list[tuple[str, ...]]:
    """The leaderboard group of each row, as a tuple of strings (size_band derived)."""
    out = []
    for _, r in df.iterrows():
        key = []
        for k in spec.group_by:
            v = (
                spec.band(None if is_missing(r.get(spec.band_of)) else float(r[spec.band_of]))
                if k == "size_band"
                else r.get(k)
            )
            key.append("n/a" if is_missing(v) else str(v))
        out.append(tuple(key))
    return out


def group_label(spec: StageSpec, key: Sequence[str]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in zip(spec.group_by, key))
