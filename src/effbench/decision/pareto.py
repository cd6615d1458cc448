"""Exact Pareto fronts over k ≥ 2 objectives, per axis and across axes.

:func:`non_dominated` is the pure core: row i is dominated when some row j is no worse on every
objective and strictly better on one; equal rows never dominate each other, so ties are all on
the front. A row with a missing (NaN) objective is neither on the front nor dominates anything.

:func:`axis_fronts` applies it to a frame, one front per group of the axis (e.g. per size):

- a row whose status is not ok is left out and listed (OOM, failed);
- an objective measured in no ok row of the group (e.g. energy on a CPU without counters) is
  dropped from that front and the front says so, with the reason recorded in the records;
- a row missing an objective the others have is left out of that front and listed with the
  reason, never placed on it or behind it by a guess.

Noise: a dominated row is marked "within noise" when every row dominating it is better only on
objectives where the two rows' 95 % intervals overlap (docs/noise.md); the front itself is exact.
A front whose energy objective holds figures of different energy scopes (gpu, module, ...) says so
in its table and caption: its joules count different hardware.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..aggregate.frame import is_missing
from ..aggregate.pareto import front_steps
from ..aggregate.specs import HIGHER, LOWER
from ..aggregate.tables import shared_reasons
from . import plots
from .axes import Axis, Objective, interval, missing_reason, shown, value
from .gates import energy_scope_warning

ON, DOMINATED, LEFT_OUT = "non-dominated", "dominated", "left out"
MIN_PLOTTED = 3  # cells with every objective a front needs to be drawn
_SENSE = {LOWER: 1.0, "min": 1.0, HIGHER: -1.0, "max": -1.0}


def _minimise(points: Any, better: Sequence[str]) -> np.ndarray:
    q = np.asarray(points, dtype=float)
    if q.ndim != 2 or q.shape[1] != len(better):
        raise ValueError(f"points must be n × {len(better)}, got shape {q.shape}")
    try:
        return q * np.array([_SENSE[b] for b in better])
    except KeyError as e:
        raise ValueError(f"direction {e.args[0]!r} is not one of {sorted(_SENSE)}") from None


def dominance(points: Any, better: Sequence[str]) -> np.ndarray:
    """n × n booleans: [j, i] is True when row j dominates row i (rows with a NaN: never)."""
    q = _minimise(points, better)
    complete = np.isfinite(q).all(axis=1)
    no_worse = (q[:, None, :] <= q[None, :, :]).all(axis=-1)
    better_somewhere = (q[:, None, :] < q[None, :, :]).any(axis=-1)
    return no_worse & better_somewhere & complete[:, None] & complete[None, :]


def non_dominated(points: Any, better: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows on the front (complete rows no other row dominates)."""
    q = _minimise(points, better)
    return np.isfinite(q).all(axis=1) & ~dominance(points, better).any(axis=0)


@dataclass
class Front:
    """One group's front: which objectives it uses and each row's place."""

    axis: Axis
    group: tuple[tuple[str, str], ...]  # (key, value) pairs
    objectives: list[Objective]
    dropped: list[tuple[Objective, str]]  # objectives measured in no row here, with the reason
    rows: pd.DataFrame
    status: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(f"{k} = {v}" for k, v in self.group)

    @property
    def name(self) -> str:
        return plots.slug(self.axis.name, *(v for _, v in self.group))

    def candidates(self) -> list[str]:
        return [str(c) for c in self.rows[self.axis.candidate]]


def _reasons(rows: pd.DataFrame, column: str) -> str:
    return "; ".join(sorted({missing_reason(r, column) for _, r in rows.iterrows()})) or "no rows"


def _within_noise(i: pd.Series, j: pd.Series, objectives: list[Objective]) -> bool:
    """Whether j beats i only where their intervals overlap (unknown noise: not within)."""
    for o in objectives:
        a, b = value(i, o.column), value(j, o.column)
        if a == b:
            continue
        ia, ib = interval(i, o.column), interval(j, o.column)
        if ia is None or ib is None or not ia.overlaps(ib):
            return False
    return True


def group_front(rows: pd.DataFrame, axis: Axis, group: tuple[tuple[str, str], ...]) -> Front:
    rows = rows.reset_index(drop=True)
    ok = rows["status"] == "ok"
    objectives, dropped = [], []
    for o in axis.objectives:
        if o.column in rows and any(value(r, o.column) is not None for _, r in rows[ok].iterrows()):
            objectives.append(o)
        else:
            dropped.append((o, "not measured in any cell here: " + _reasons(rows[ok], o.column)))
    front = Front(axis, group, objectives, dropped, rows)
    pts = np.array([[np.nan if value(r, o.column) is None else value(r, o.column) for o in objectives]
                    for _, r in rows.iterrows()], dtype=float).reshape(len(rows), len(objectives))
    pts[~ok.to_numpy()] = np.nan
    dom = dominance(pts, [o.better for o in objectives]) if objectives else np.zeros((len(rows),) * 2, bool)
    names = front.candidates()
    for i, r in rows.iterrows():
        if r["status"] != "ok":
            detail = "" if is_missing(r.get("status_detail")) else f": {r['status_detail']}"
            front.status.append(LEFT_OUT)
            front.detail.append(f"status {r['status']}{detail}")
        elif not objectives or np.isnan(pts[i]).any():
            miss = [o for o in objectives if value(r, o.column) is None]
            front.status.append(LEFT_OUT)
            front.detail.append("; ".join(f"{o.label} missing ({missing_reason(r, o.column)})" for o in miss)
                                or "no objective measured")
        elif dom[:, i].any():
            by = [int(j) for j in np.flatnonzero(dom[:, i])]
            noise = all(_within_noise(r, rows.iloc[j], objectives) for j in by)
            front.status.append(DOMINATED)
            front.detail.append("dominated by " + ", ".join(names[j] for j in by)
                                + (" (within noise)" if noise else ""))
        else:
            front.status.append(ON)
            front.detail.append("")
    return front


def axis_fronts(df: pd.DataFrame, axis: Axis) -> list[Front]:
    """One front per group of the axis, groups in the frame's order."""
    if not len(df) or axis.candidate not in df:
        return []
    keys = list(axis.group_by)
    tmp = df.copy()
    for k in keys:
        tmp[k] = ["n/a" if is_missing(v) else str(v) for v in tmp[k]]
    out = []
    for gval, rows in tmp.groupby(keys, sort=False):
        gval = gval if isinstance(gval, tuple) else (gval,)
        out.append(group_front(df.loc[rows.index], axis, tuple(zip(keys, (str(v) for v in gval)))))
    return out


# --- outputs -------------------------------------------------------------------------------------

def _arrow(o: Objective) -> str:
    return "↓" if o.better == LOWER else "↑"


def render_front(f: Front) -> list[str]:
    lines = [f"### {f.label}", ""]
    lines.append("Objectives: " + ", ".join(f"{o.label} {_arrow(o)}" for o in f.objectives) + ".")
    for o, why in f.dropped:
        lines.append(f"Left out of this front: {o.label} — {why}.")
    scope = _scope(f)
    if scope:
        lines.append(f"Warning: {scope}.")
    lines += ["", "| Candidate | Cell | " + " | ".join(o.label for o in f.objectives) + " | Front |",
              "|---|---|" + "---:|" * len(f.objectives) + "---|"]
    notes: dict[str, list[str]] = {}
    for (_, r), st, det in zip(f.rows.iterrows(), f.status, f.detail):
        place = "**non-dominated**" if st == ON else (det if st == DOMINATED else f"left out: {det}")
        cells = [shown(r, o.column) for o in f.objectives]
        mark = ""
        for flag, text in _caveats(r):
            notes.setdefault(text, []).append(str(r["cell"]))
            mark += f" [{flag}]"
        lines.append(f"| {r[f.axis.candidate]}{mark} | {r['cell']} | " + " | ".join(cells) + f" | {place} |")
    lines += [""] + [f"- {text}: {', '.join(cells)}" for text, cells in notes.items()]
    return lines + ([""] if notes else [])


def _caveats(r: pd.Series) -> list[tuple[str, str]]:
    """The tables' marks: [F] served by another engine than configured, [S] not measured alone
    (another effbench job, or foreign load: :func:`..aggregate.tables.shared_reasons`)."""
    out = []
    fallback = r.get("engine_fallback")
    if not is_missing(fallback):
        out.append(("F", f"[F] served by {r.get('engine')}, not the configured engine ({fallback}): its latency "
                         "and memory are not comparable with other engines' cells"))
    if shared_reasons(r):  # another effbench job, or foreign load on its host
        out.append(("S", "[S] measured while other jobs ran: its timed figures are not comparable"))
    return out


def front_csv_rows(f: Front) -> list[dict[str, Any]]:
    """The non-dominated cells, each objective with its interval."""
    out = []
    for (_, r), st in zip(f.rows.iterrows(), f.status):
        if st != ON:
            continue
        row: dict[str, Any] = {"axis": f.axis.name, "group": f.label, "candidate": r[f.axis.candidate],
                               "cell": r["cell"], "objectives": " ".join(o.column for o in f.objectives)}
        for o in f.objectives:
            iv = interval(r, o.column)
            row[o.column] = value(r, o.column)
            row[o.column + "__ci_low"] = iv.low if iv else None
            row[o.column + "__ci_high"] = iv.high if iv else None
        out.append(row)
    return out


def plot_front(f: Front, out: Path) -> dict[str, Any] | None:
    """2-D projections: quality (or the first objective) against each other objective, the n-D
    front filled, dominated rows hollow, each projection's own 2-D front dashed. None for a front
    of fewer than :data:`MIN_PLOTTED` complete cells."""
    if len(f.objectives) < 2:
        return None
    y, xs = f.objectives[0], f.objectives[1:]
    complete = [i for i, st in enumerate(f.status) if st in (ON, DOMINATED)]
    if len(complete) < MIN_PLOTTED:  # the table says it all (and the cross-axis front shows them)
        return None
    fig, axes = plots.new_figure(len(xs))
    rows = f.rows.iloc[complete]
    on = [f.status[i] == ON for i in complete]
    names = [plots.point_label(r, f.axis.candidate) for _, r in rows.iterrows()]
    for ax, x in zip(axes, xs):
        xv = [value(r, x.column) for _, r in rows.iterrows()]
        yv = [value(r, y.column) for _, r in rows.iterrows()]
        for k, (_, r) in enumerate(rows.iterrows()):
            ix, iy = interval(r, x.column), interval(r, y.column)
            ax.errorbar(xv[k], yv[k], xerr=[[xv[k] - ix.low], [ix.high - xv[k]]] if ix else None,
                        yerr=[[yv[k] - iy.low], [iy.high - yv[k]]] if iy else None, fmt="o", ms=7,
                        color="tab:blue", mfc="tab:blue" if on[k] else "white", capsize=2, zorder=3)
            ax.annotate(names[k], (xv[k], yv[k]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        two_d = np.flatnonzero(non_dominated(np.column_stack([xv, yv]), [x.better, y.better]))
        fx, fy, style = front_steps([xv[i] for i in two_d], [yv[i] for i in two_d], x.better)
        ax.plot(fx, fy, drawstyle=style, color="0.4", linestyle="--", linewidth=1, zorder=2)
        ax.set_xlabel(f"{x.label} {_arrow(x)}")
        ax.set_ylabel(f"{y.label} {_arrow(y)}")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{f.axis.title}: {f.label}\nfilled: non-dominated over all objectives; dashed: 2-D front",
                 fontsize=9)
    rel = plots.save(fig, "pareto_" + f.name, out)
    return {"name": "pareto_" + f.name, "title": f"Pareto projections — {f.axis.title}: {f.label}", **rel,
            "caption": _caption(f)}


def _scope(f: Front) -> str | None:
    """The mixed-energy-scope warning of a front's ok rows, or None."""
    ok = f.rows[f.rows["status"] == "ok"] if len(f.rows) else f.rows
    return energy_scope_warning(ok, [o.column for o in f.objectives])


def _caption(f: Front) -> str:
    text = (f"{sum(s == ON for s in f.status)} of {len(f.status)} cells non-dominated over "
            + ", ".join(o.label for o in f.objectives) + "; error bars are 95 % intervals where measured")
    if f.dropped:
        text += "; not measured here: " + ", ".join(o.label for o, _ in f.dropped)
    scope = _scope(f)
    if scope:
        text += "; " + scope
    left = [f"{c} ({d})" for c, s, d in zip(f.candidates(), f.status, f.detail) if s == LEFT_OUT]
    return text + ("; left out: " + "; ".join(left) if left else "") + "."
