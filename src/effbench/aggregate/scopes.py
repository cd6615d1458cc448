"""What the energy figures of a table, leaderboard or plot counted (the records' ``energy_scope``).

Two joules compare only when one kind of counter measured both (effbench.measure.energy_scope):
every table with an energy column notes the distinct scopes of its rows, a sentence each
(:data:`SCOPE_NOTES`); where its rows carry different scopes it notes :func:`mixed_scope_flag`'s
warning, and the leaderboard leaves its energy metrics out of the score of a group whose rows differ
in scope (each listed with the reason), and a Pareto plot with an energy axis says so in its title
and manifest entry: energy of different scopes is never compared silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..measure.energy_scope import SCOPE_NOTES, mixed_scope_flag
from ..record_columns import ENERGY_SCOPES
from .frame import is_missing

MIXED_MARK = "mixed energy scopes"
NO_ENERGY_NOTE = ("Energy scope: none; no row measured energy (no energy counter on the host: each record's "
                  "energy reason says why).")  # the words a title or cell carries where scopes differ


def distinct_scopes(values: Iterable[Any]) -> list[str]:
    """The distinct scopes present, in the schema's order (unknown names last)."""
    found = {str(v) for v in values if not is_missing(v)}
    order = {s: i for i, s in enumerate(ENERGY_SCOPES)}
    return sorted(found, key=lambda s: (order.get(s, len(order)), s))


def scopes_of(df: pd.DataFrame, energy_columns: Iterable[str] = ()) -> list[str]:
    """The scopes of the rows that measured any of ``energy_columns`` (all rows when none given)."""
    if not len(df) or "energy_scope" not in df.columns:
        return []
    cols = [c for c in energy_columns if c in df.columns]
    if not cols:
        return distinct_scopes(df["energy_scope"])
    have = [any(not is_missing(r.get(c)) for c in cols) for _, r in df.iterrows()]
    return distinct_scopes(s for s, h in zip(df["energy_scope"], have) if h)


def scope_notes(df: pd.DataFrame, energy_columns: Iterable[str]) -> list[str]:
    """A table's notes on its energy figures: what the counter covered, one sentence per scope of
    the rows that measured energy; the mixed-scope warning where they differ; and the rows whose
    records hold energy without a scope (older records)."""
    cols = [c for c in energy_columns if c in df.columns]
    if not cols or not len(df):
        return []
    measured = df[[any(not is_missing(r.get(c)) for c in cols) for _, r in df.iterrows()]]
    if not len(measured):
        return [NO_ENERGY_NOTE]
    scopes = scopes_of(measured, cols)
    out = [f"Energy scope (what the energy counter covered): {SCOPE_NOTES.get(s, s)}." for s in scopes]
    flag = mixed_scope_flag(scopes)
    if flag:
        out.append(f"[{MIXED_MARK}] {flag}.")
    if "energy_scope" in measured.columns:
        unknown = [str(c) for c, s in zip(measured["cell"], measured["energy_scope"]) if is_missing(s)]
    else:
        unknown = [str(c) for c in measured["cell"]]
    if unknown:
        out.append("Energy scope not recorded in the records (e.g. written before schema 5) of: "
                   + ", ".join(unknown) + ".")
    return out

