"""The Pareto plots mark the front, not just exist.

The marked points are read back from each figure as it is saved (the matplotlib artists handed
to ``savefig``) and compared with a brute-force front computed here from the definition, with
the directions the paper gives each figure (accuracy and throughput: higher is better; memory,
power, latency: lower), on points with ties, a row missing a figure and an OOM row with the best
numbers of all (neither may be marked):

- the aggregation's plots (``effbench.aggregate.pareto.write_pareto_plots``): the ringed points
  ("Pareto front (non-dominated)") and the dashed step line through them;
- the decision's projections (``effbench.decision.pareto.plot_front``): filled markers are the
  cells non-dominated over all objectives, the dashed line each panel's own 2-D front.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from effbench.aggregate.pareto import write_pareto_plots
from effbench.aggregate.specs import INFERENCE as INFERENCE_SPEC
from effbench.decision.axes import INFERENCE as INFERENCE_AXIS
from effbench.decision.pareto import axis_fronts, plot_front

# Stated here, not read from the code under test: which way each plotted figure is better.
HIGHER_IS_BETTER = {"accuracy": True, "it_tokens_per_s": True, "amu_gb": False, "aec_w": False,
                    "tpot_s_mean": False, "energy_j_per_token": False}
RING = "Pareto front (non-dominated)"


def brute_front(points: list[tuple[float, ...]], columns: list[str]) -> list[int]:
    """Indices of the points no other point beats: no worse on every column, better on one.
    Points with a missing coordinate are never on the front and beat nothing."""
    def no_worse(a: float, b: float, col: str) -> bool:
        return a >= b if HIGHER_IS_BETTER[col] else a <= b

    complete = [i for i, p in enumerate(points) if not any(v is None or math.isnan(v) for v in p)]
    front = []
    for i in complete:
        beaten = any(
            all(no_worse(points[j][k], points[i][k], c) for k, c in enumerate(columns)) and points[j] != points[i]
            for j in complete if j != i)
        if not beaten:
            front.append(i)
    return front




def _pairs(xs, ys) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    return sorted((float(x), float(y)) for x, y in zip(xs, ys))


# --- the aggregation's plots -------------------------------------------------------------------


def _serving_frame(seed: int) -> pd.DataFrame:
    """Served cells of two models on a coarse grid (many ties), one cell missing its accuracy and
    one OOM cell whose (leftover) figures beat every other."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(12):
        rows.append({"cell": f"m{i % 2}/c{i}", "model": f"m{i % 2}", "precision": "bf16", "status": "ok",
                     "host": "h", "accuracy": float(rng.integers(1, 6)) / 10,
                     "it_tokens_per_s": float(rng.integers(1, 6)) * 100, "amu_gb": float(rng.integers(1, 6)),
                     "aec_w": float(rng.integers(1, 6)) * 50})
    rows[3]["accuracy"] = None
    rows[3]["accuracy__missing"] = "scoring failed"
    rows.append({"cell": "m0/oom", "model": "m0", "precision": "bf16", "status": "oom", "host": "h",
                 "accuracy": 1.0, "it_tokens_per_s": 1e6, "amu_gb": 0.01, "aec_w": 0.1})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_aggregation_plots_ring_exactly_the_front(tmp_path: Path, saved_figures: list[Figure], seed: int) -> None:
    df = _serving_frame(seed)
    written, skipped = write_pareto_plots(df, INFERENCE_SPEC, tmp_path)
    assert not skipped and [(w["x"], w["y"]) for w in written] == list(INFERENCE_SPEC.pareto)
    assert len(saved_figures) == len(written)
    ok = df[df["status"] == "ok"].reset_index(drop=True)
    for (x, y), fig in zip(INFERENCE_SPEC.pareto, saved_figures):
        (ax,) = fig.axes
        assert INFERENCE_SPEC.column(x).header in ax.get_title()
        pts = [(float(a), float("nan") if b is None or pd.isna(b) else float(b)) for a, b in zip(ok[x], ok[y])]
        want = sorted(pts[i] for i in brute_front(pts, [x, y]))
        assert want and len(want) < sum(not math.isnan(b) for _, b in pts), "degenerate draw: every point on the front"
        (ring,) = [c for c in ax.collections if c.get_label() == RING]
        assert sorted(map(tuple, ring.get_offsets().tolist())) == want, (x, y)
        (line,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert _pairs(line.get_xdata(), line.get_ydata()) == want, (x, y)
        # the step traces the dominance boundary: right-continuous when smaller x is better
        assert line.get_drawstyle() == ("steps-pre" if HIGHER_IS_BETTER[x] else "steps-post")
        # every plotted cell is drawn (the OOM cell and the one without accuracy are not)
        drawn = Counter(tuple(p) for c in ax.collections if c.get_label() != RING for p in c.get_offsets().tolist())
        assert drawn == Counter(p for p in pts if not math.isnan(p[1]))


# --- the decision's projections -------------------------------------------------------------------


def _inference_axis_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = [o.column for o in INFERENCE_AXIS.objectives]
    rows = []
    for i in range(10):
        r = {"cell": f"xs/c{i}", "precision": f"c{i}", "model": "xs", "load_point": "offline", "status": "ok"}
        r.update({c: float(rng.integers(1, 5)) for c in cols})
        rows.append(r)
    rows[4]["amu_gb"] = None
    rows[4]["amu_gb__missing"] = "sampler failed"
    rows.append({"cell": "xs/oom", "precision": "oom", "model": "xs", "load_point": "offline", "status": "oom",
                 **{c: (100.0 if HIGHER_IS_BETTER[c] else 0.0) for c in cols}})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [5, 6])
def test_decision_projections_fill_the_nd_front_and_dash_each_2d_front(tmp_path: Path, saved_figures: list[Figure],
                                                                       seed: int) -> None:
    df = _inference_axis_frame(seed)
    cols = [o.column for o in INFERENCE_AXIS.objectives]
    (front,) = axis_fronts(df, INFERENCE_AXIS)
    assert plot_front(front, tmp_path) is not None
    (fig,) = saved_figures
    complete = [i for i in range(len(df)) if df.loc[i, "status"] == "ok" and not df.loc[i, cols].isna().any()]
    pts = {df.loc[i, "precision"]: tuple(float(df.loc[i, c]) for c in cols) for i in complete}
    names = list(pts)
    nd = {names[i] for i in brute_front([pts[n] for n in names], cols)}
    assert nd and len(nd) < len(names), "degenerate draw"
    y = cols[0]  # quality against each other objective, one panel each
    assert len(fig.axes) == len(cols) - 1
    for ax, x in zip(fig.axes, cols[1:]):
        labels = [t.get_text() for t in ax.texts]
        assert sorted(labels) == sorted(names)  # the OOM cell and the one without AMU are not drawn
        filled = set()
        for label, container in zip(labels, ax.containers):
            marker = container.lines[0]
            xy = (float(marker.get_xdata()[0]), float(marker.get_ydata()[0]))
            assert xy == (pts[label][cols.index(x)], pts[label][0]), (label, x)
            face = to_rgba(marker.get_markerfacecolor())
            assert face in (to_rgba("white"), to_rgba("tab:blue")), face
            if face != to_rgba("white"):
                filled.add(label)
        assert filled == nd, x
        proj = [(pts[n][cols.index(x)], pts[n][0]) for n in names]
        want = sorted(proj[i] for i in brute_front(proj, [x, y]))
        (line,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert _pairs(line.get_xdata(), line.get_ydata()) == want, x
