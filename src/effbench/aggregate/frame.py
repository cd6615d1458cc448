"""Records → one pandas frame per stage: one row per cell, repeats collapsed, rows ordered.

Repeated runs of a cell (same ``cell``) collapse to one row: when any run is ok, every
figure is the median over the ok runs that measured it (its ``__missing`` reason is kept
only when no ok run measured it; a median of several runs has no interval); otherwise the
latest run's status and detail stand.
``n_runs`` and ``n_ok`` say how many runs a row stands for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..record import CI_SUFFIXES, FIGURE_COLUMNS, read_records
from .specs import StageSpec


def read_stage_records(records: Iterable[Path | str], stage: str) -> pd.DataFrame:
    """Read the given record files (never a glob), one row per run; all must be of ``stage``."""
    df = read_records([Path(p) for p in records]).to_pandas()
    wrong = df[df["stage"] != stage] if len(df) else df
    if len(wrong):
        cells = ", ".join(f"{s}:{c}" for s, c in zip(wrong["stage"], wrong["cell"]))
        raise ValueError(f"aggregating stage {stage!r} but given records of other stages: {cells}")
    return df.drop_duplicates("run_id", keep="last").reset_index(drop=True)  # a file named twice


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
        tmp[f"_n_{k}"] = tmp[k].fillna("").astype(str)
        sort_cols += [f"_o_{k}", f"_n_{k}"]
    tmp = tmp.sort_values(sort_cols + ["cell"], kind="stable")
    return tmp.drop(columns=[c for c in tmp.columns if c.startswith(("_o_", "_n_"))]).reset_index(drop=True)


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
