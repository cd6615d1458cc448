"""Pareto fronts and their plots.

:func:`pareto_front` is a pure function. :func:`write_pareto_plots` draws, for each
(x, y) pair of a stage spec, the ok rows as labelled points coloured by leaderboard
group with the non-dominated front as a step line, and writes PNG and SVG. A pair whose
x or y is missing for every ok row is not drawn; the reason (from ``__missing``) is
returned instead, so the summary can say e.g. "AEC not measured on host h: <reason>".
A plot with an energy axis names the energy scopes of its points (``energy_scopes``) and, where they
differ, carries the mixed-scope warning in its title and manifest entry (``energy_scope_flag``):
its front then compares joules counted over different hardware (:mod:`.scopes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_path
from ..measure.energy_scope import mixed_scope_flag
from .frame import group_keys, group_label, is_missing
from .plotpoints import legend_outside, place_labels, point_text, save_points
from .scopes import MIXED_MARK, scopes_of
from .specs import ENERGY_COLUMNS, HIGHER, LOWER, StageSpec
from .tables import FALLBACK_MARK

_SIGN = {"min": 1.0, LOWER: 1.0, "max": -1.0, HIGHER: -1.0}


def _signs(directions: Sequence[str]) -> list[float]:
    try:
        return [_SIGN[d] for d in directions]
    except KeyError as e:
        raise ValueError(f"direction {e.args[0]!r} is not one of {sorted(_SIGN)}") from None


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b (both already in minimisation form): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices (ascending) of the non-dominated points.

    ``directions`` gives one of "min"/"lower" or "max"/"higher" per axis. A point is on the
    front unless another point is at least as good on every axis and strictly better on
    one; so identical points are all on the front. Points with a missing or non-finite
    coordinate are never on it.
    """
    signs = _signs(directions)
    keyed: dict[int, tuple[float, ...]] = {}
    for i, p in enumerate(points):
        if len(p) != len(signs):
            raise ValueError(f"point {i} has {len(p)} coordinates, expected {len(signs)}")
        if any(v is None or not math.isfinite(float(v)) for v in p):
            continue
        keyed[i] = tuple(s * float(v) for s, v in zip(signs, p))
    return [i for i, a in keyed.items() if not any(dominates(b, a) for j, b in keyed.items() if j != i)]


def front_steps(xs: Sequence[float], ys: Sequence[float], x_dir: str) -> tuple[list[float], list[float], str]:
    """Front points sorted by x and the matplotlib ``drawstyle`` that traces the dominance boundary."""
    pts = sorted(zip(xs, ys))
    where = "steps-post" if _SIGN[x_dir] > 0 else "steps-pre"
    return [p[0] for p in pts], [p[1] for p in pts], where


def point_label(r: Any, column: str) -> str:
    """A plot point's label: the row's ``column``, with the tables' [F] where another engine than
    the configured one served the cell (``engine_fallback``: e.g. every precision of a model one of
    whose precisions vLLM cannot serve here, one engine per model)."""
    fallback = r.get("engine_fallback") if hasattr(r, "get") else None
    return f"{r[column]} [{FALLBACK_MARK}]" if not is_missing(fallback) else str(r[column])


def plot_name(spec: StageSpec, x: str, y: str) -> str:
    return f"{spec.stage}_{y}_vs_{x}"


def _missing_reason(ok: pd.DataFrame, col: str, header: str) -> str:
    reasons = sorted({str(r) for r in ok.get(col + "__missing", pd.Series(dtype=object)) if not is_missing(r)})
    hosts = sorted({str(h) for h in ok["host"] if not is_missing(h)})
    where = ("host " if len(hosts) == 1 else "hosts ") + ", ".join(hosts) if hosts else "these runs"
    return f"{header} not measured on {where}: " + ("; ".join(reasons) or "no reason recorded")


def write_pareto_plots(
    df: pd.DataFrame, spec: StageSpec, out: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write ``<out>/plots/<stage>_<y>_vs_<x>.{png,svg}``; return (written, skipped) entries."""
    written: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    ok = df[df["status"] == "ok"] if len(df) else df
    groups = group_keys(ok, spec) if len(ok) else []
    for x, y in spec.pareto:
        xc, yc = spec.column(x), spec.column(y)
        name = plot_name(spec, x, y)
        base = {"name": name, "x": x, "y": y, "title": f"{yc.header} vs {xc.header}"}
        if not len(ok):
            skipped.append({**base, "kind": "plot", "reason": f"no ok runs of stage {spec.stage}"})
            continue
        reason = None
        for col, c in ((x, xc), (y, yc)):
            if all(is_missing(v) for v in ok[col]):
                reason = _missing_reason(ok, col, c.header)
                break
        if reason:
            skipped.append({**base, "kind": "plot", "reason": reason})
            continue
        have = [not is_missing(a) and not is_missing(b) for a, b in zip(ok[x], ok[y])]
        left_out = []
        for (_, r), h in zip(ok.iterrows(), have):
            if not h:
                col = x if is_missing(r[x]) else y
                why = r.get(col + "__missing")
                why = "no reason recorded" if is_missing(why) else why
                left_out.append(f"{r[spec.label_column]} ({spec.column(col).header} missing: {why})")
        pts = ok[have]
        pgroups = [g for g, h in zip(groups, have) if h]
        rel = {ext: f"plots/{name}.{ext}" for ext in ("png", "svg")}
        energy = [a for a in (x, y) if a in ENERGY_COLUMNS]
        scope = {}
        if energy:
            scopes = scopes_of(pts, energy)
            flag = mixed_scope_flag(scopes)
            scope = {"energy_scopes": scopes, **({"energy_scope_flag": flag} if flag else {})}
        points = _draw(pts, pgroups, spec, x, y, out, rel, mixed="energy_scope_flag" in scope)
        written.append({**base, **rel, "left_out": left_out, "points": points, **scope})
    return written, skipped


def _draw(
    pts: pd.DataFrame, groups: list[tuple[str, ...]], spec: StageSpec, x: str, y: str, out: Path, rel: dict[str, str],
    mixed: bool = False,
) -> dict[str, Any]:
    """Draw and save the plot; return its points (pixel positions and hover texts) for the manifest."""
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "effbench"  # stable SVG ids
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xc, yc = spec.column(x), spec.column(y)
    xs = [float(v) for v in pts[x]]
    ys = [float(v) for v in pts[y]]
    labels = [point_label(r, spec.label_column) for _, r in pts.iterrows()]
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    palette = matplotlib.colormaps["tab10"]
    for gi, key in enumerate(dict.fromkeys(groups)):
        idx = [i for i, g in enumerate(groups) if g == key]
        ax.scatter(
            [xs[i] for i in idx], [ys[i] for i in idx], color=palette(gi % 10), label=group_label(spec, key), zorder=3
        )
    front = pareto_front(list(zip(xs, ys)), (xc.better or LOWER, yc.better or LOWER))
    fx, fy, style = front_steps([xs[i] for i in front], [ys[i] for i in front], xc.better or LOWER)
    ax.plot(fx, fy, drawstyle=style, color="0.3", linestyle="--", linewidth=1, zorder=2)
    # Ring the non-dominated points too: a front of one point draws no line.
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=160, facecolors="none", edgecolors="black",
               linewidths=1.2, zorder=4, label="Pareto front (non-dominated)")
    ax.set_xlabel(xc.axis_label)
    ax.set_ylabel(yc.axis_label)
    ax.set_title(f"{spec.stage}: {yc.header} vs {xc.header}" + (f"\n[{MIXED_MARK}: not comparable]" if mixed else ""))
    ax.grid(True, alpha=0.3)
    legend_outside(ax)  # beside the axes: a legend inside hid points
    place_labels(fig, ax, xs, ys, labels)
    with atomic_path(out / rel["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
    with atomic_path(out / rel["svg"]) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    on_front = set(front)
    energy = x in ENERGY_COLUMNS or y in ENERGY_COLUMNS
    texts = [point_text(lab, r, ((yc.header, y, yc.fmt), (xc.header, x, xc.fmt)), i in on_front)
             + (f"\nenergy scope: {r.get('energy_scope')}" if energy and not is_missing(r.get("energy_scope")) else "")
             for i, (lab, (_, r)) in enumerate(zip(labels, pts.iterrows()))]
    return save_points(fig, ax, 150, xs, ys, texts, [i in on_front for i in range(len(xs))])
