"""A goodput floor under the user's SLOs (``recommend --min-goodput RPS --slo-ttft-ms T --slo-tpot-ms P``).

Goodput is the rate of requests that met both SLOs of a load point (its ``slo_ttft_ms`` and
``slo_tpot_ms``), so a record proves a floor only for SLOs at least as loose as its own: a model ×
precision meets ``min_goodput_rps`` (and ``min_goodput_frac``, the share of requests within the
SLOs) when one of its ok load points, of any mode, measured under SLOs no looser than asked,
reached the floor. A record measured under looser SLOs than asked (or under none) cannot prove it;
when every goodput record of a candidate is such, the candidate is unverified and left out, with
the SLOs it was measured under as the reason. An SLO not asked accepts any the records used.

:func:`attach_goodput` gives each serving row the evidence as two figures the constraint checks read
(:data:`RPS`, :data:`FRAC`: the best qualifying load point's, with their intervals, sources and,
where none qualifies, why), and :data:`POINT`, the load point it was measured at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..aggregate.frame import is_missing
from .axes import value

RPS, FRAC, POINT = "goodput_slo_rps", "goodput_slo_frac", "goodput_slo_point"
FLOORS = {"min_goodput_rps": "goodput_rps", "min_goodput_frac": "goodput_frac"}  # constraint -> record column
SLOS = {"slo_ttft_ms": "TTFT", "slo_tpot_ms": "TPOT"}  # the SLOs asked -> their name
# flag -> (constraint, the valid range said in an error, lowest, highest, lowest allowed itself)
RANGES = {
    "--min-goodput": ("min_goodput_rps", "a number of requests/s ≥ 0", 0.0, math.inf, True),
    "--min-goodput-frac": ("min_goodput_frac", "a fraction of requests from 0 to 1", 0.0, 1.0, True),
    "--slo-ttft-ms": ("slo_ttft_ms", "a time to first token in ms > 0", 0.0, math.inf, False),
    "--slo-tpot-ms": ("slo_tpot_ms", "a time per output token in ms > 0", 0.0, math.inf, False),
}


def usage_errors(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with the goodput arguments (constraint name -> value; None: not given), each
    naming the flag and its valid range: a value out of range, or an SLO given without a floor to
    judge under it."""
    out = []
    for flag, (name, what, lo, hi, lo_ok) in RANGES.items():
        v = values.get(name)
        if v is None:
            continue
        ok = isinstance(v, (int, float)) and math.isfinite(v) and (v >= lo if lo_ok else v > lo) and v <= hi
        if not ok:
            out.append(f"{flag} must be {what}, got {v!r}")
    if not any(values.get(k) is not None for k in FLOORS):
        for flag, (name, *_rest) in RANGES.items():
            if name in SLOS and values.get(name) is not None:
                out.append(f"{flag} sets the SLO a goodput floor is judged under: give --min-goodput and/or "
                           "--min-goodput-frac with it")
    return out


def wanted(c: Any) -> bool:
    """Whether the constraints set a goodput floor."""
    return any(getattr(c, k, None) is not None for k in FLOORS)


def _slo_text(r: Mapping[str, Any]) -> str:
    parts = [f"{name} {float(r[k]):g} ms" if not is_missing(r.get(k)) else f"no {name} SLO"
             for k, name in SLOS.items()]
    return ", ".join(parts)


def looser(r: Mapping[str, Any], c: Any) -> list[str]:
    """The SLOs of a record looser than asked (an SLO the record did not set is looser than any)."""
    out = []
    for k, name in SLOS.items():
        asked = getattr(c, k, None)
        if asked is None:
            continue
        got = r.get(k)
        if is_missing(got):
            out.append(f"no {name} SLO (asked ≤ {asked:g} ms)")
        elif float(got) > asked:
            out.append(f"{name} {float(got):g} ms > {asked:g} ms asked")
    return out


def _meets(r: pd.Series, c: Any) -> bool:
    for floor, col in FLOORS.items():
        limit = getattr(c, floor, None)
        v = value(r, col)
        if limit is not None and (v is None or v < limit):
            return False
    return True


def evidence(points: pd.DataFrame, c: Any) -> tuple[pd.Series | None, str | None]:
    """Of one model × precision's rows at every load point: (the load point that stands for its
    goodput under the SLOs asked, or None; why none does). It is the first that meets every floor
    by goodput (highest first), else the highest goodput measured under the SLOs asked."""
    ok = points[points["status"] == "ok"] if len(points) else points
    measured = [r for _, r in ok.iterrows() if value(r, "goodput_rps") is not None]
    if not measured:
        reasons = sorted({str(r.get("goodput_rps__missing")) for _, r in ok.iterrows()
                          if not is_missing(r.get("goodput_rps__missing"))})
        return None, ("goodput not measured at any load point" + (": " + "; ".join(reasons) if reasons else ""))
    proving = [r for r in measured if not looser(r, c)]
    if not proving:
        said = "; ".join(f"{r['load_point']} ({', '.join(looser(r, c))})" for r in measured)
        return None, f"goodput measured only under looser SLOs than asked, which cannot prove the floor: {said}"
    proving.sort(key=lambda r: -float(value(r, "goodput_rps") or 0.0))
    return next((r for r in proving if _meets(r, c)), proving[0]), None


def attach_goodput(every: pd.DataFrame, rows: pd.DataFrame, c: Any) -> pd.DataFrame:
    """``rows`` (serving rows at one load point) with each model × precision's goodput evidence
    under the SLOs asked, from ``every`` (its rows at every load point): :data:`RPS` and
    :data:`FRAC` with intervals and sources, or why they are missing, and :data:`POINT`."""
    rows = rows.copy()
    cols: dict[str, list[Any]] = {k: [] for k in (POINT,)}
    for new in (RPS, FRAC):
        for s in ("", "__missing", "__source", "__ci_low", "__ci_high", "__ci_n", "__ci_method"):
            cols[new + s] = []
    cache: dict[tuple[str, str], tuple[pd.Series | None, str | None]] = {}
    for _, r in rows.iterrows():
        key = (str(r["model"]), str(r["precision"]))
        if key not in cache:
            mine = every[(every["model"].astype(str) == key[0]) & (every["precision"].astype(str) == key[1])] \
                if len(every) else every
            cache[key] = evidence(mine, c)
        best, why = cache[key]
        cols[POINT].append(None if best is None else str(best["load_point"]))
        for new, col in ((RPS, "goodput_rps"), (FRAC, "goodput_frac")):
            v = None if best is None else value(best, col)
            cols[new].append(v)
            missing = why if best is None else (None if v is not None else
                                                f"{col} not measured at {best['load_point']}")
            cols[new + "__missing"].append(missing)
            cols[new + "__source"].append(None if v is None else
                                          f"{col} at load point {best['load_point']} ({_slo_text(best)})")
            for s in ("__ci_low", "__ci_high", "__ci_n", "__ci_method"):
                x = None if best is None or v is None else best.get(col + s)
                cols[new + s].append(None if is_missing(x) else x)
    for k, v in cols.items():
        rows[k] = pd.Series(v, index=rows.index, dtype=object)
    for new in (RPS, FRAC):
        for s in ("", "__ci_low", "__ci_high"):
            rows[new + s] = pd.to_numeric(rows[new + s])
    return rows


def slo_line(c: Mapping[str, Any]) -> str:
    """The Markdown answer's sentence on the SLOs a goodput floor was judged under."""
    asked = [f"{name} ≤ {c[k]:g} ms" for k, name in SLOS.items() if c.get(k) is not None]
    return ("Goodput judged under SLOs " + (", ".join(asked) if asked else "as each record measured them (none asked)")
            + ": a record measured under looser SLOs cannot prove the floor. ")
