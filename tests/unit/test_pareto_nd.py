"""Exact Pareto fronts over k objectives: against a brute force on random points with ties and
missing values, 2-D projections, and fronts over frames (missing objectives, OOM, noise)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from effbench.aggregate.pareto import pareto_front
from effbench.decision.axes import PRETRAIN
from effbench.decision.pareto import (DOMINATED, LEFT_OUT, ON, axis_fronts, dominance, non_dominated, plot_front,
                                     render_front)


def brute_force(points: list[list[float]], better: list[str]) -> list[bool]:
    """The definition, literally: i is on the front iff it is complete and no complete j is no
    worse everywhere and strictly better somewhere."""
    def worse_or_equal(a: float, b: float, d: str) -> bool:  # a is no better than b
        return a >= b if d == "lower" else a <= b

    out = []
    for i, p in enumerate(points):
        if any(math.isnan(v) for v in p):
            out.append(False)
            continue
        dominated = False
        for j, q in enumerate(points):
            if j == i or any(math.isnan(v) for v in q):
                continue
            ks = range(len(p))
            if all(worse_or_equal(p[k], q[k], better[k]) for k in ks) and any(p[k] != q[k] for k in ks):
                dominated = True
                break
        out.append(not dominated)
    return out


def test_matches_brute_force_on_random_points_with_ties_and_nans() -> None:
    rng = np.random.default_rng(20261130)
    checked_ties = 0
    for _ in range(400):
        n, k = int(rng.integers(0, 25)), int(rng.integers(2, 6))
        pts = rng.integers(0, 4, size=(n, k)).astype(float)  # a few levels: many ties
        pts[rng.random((n, k)) < 0.08] = np.nan
        better = [str(b) for b in rng.choice(["lower", "higher"], size=k)]
        got = non_dominated(pts, better).tolist() if n else []
        assert got == brute_force(pts.tolist(), better)
        rows = [tuple(r) for r in pts.tolist() if not any(math.isnan(v) for v in r)]
        checked_ties += len(rows) - len(set(rows))
    assert checked_ties > 50  # the draw really had duplicate points


def test_equal_points_are_both_on_the_front_and_nan_rows_dominate_nothing() -> None:
    pts = [[1.0, 2.0], [1.0, 2.0], [0.0, float("nan")], [3.0, 3.0]]
    assert non_dominated(pts, ["lower", "lower"]).tolist() == [True, True, False, False]
    # the NaN row would dominate everything on its one measured axis; it must not
    assert not dominance(pts, ["lower", "lower"])[2].any()


def test_two_d_agrees_with_the_aggregations_front() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        pts = rng.integers(0, 5, size=(int(rng.integers(1, 15)), 2)).astype(float)
        dirs = [str(d) for d in rng.choice(["lower", "higher"], size=2)]
        assert np.flatnonzero(non_dominated(pts, dirs)).tolist() == pareto_front(pts.tolist(), dirs)


def test_a_unique_point_on_a_2d_projection_front_is_on_the_full_front() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        pts = rng.integers(0, 6, size=(12, 4)).astype(float)
        full = non_dominated(pts, ["lower"] * 4)
        for a in range(4):
            for b in range(a + 1, 4):
                proj = pts[:, [a, b]]
                on2 = non_dominated(proj, ["lower", "lower"])
                for i in np.flatnonzero(on2):
                    unique = sum((proj == proj[i]).all(axis=1)) == 1
                    if unique:
                        assert full[i], (pts, a, b, i)


def test_unknown_direction_is_refused() -> None:
    with pytest.raises(ValueError, match="direction"):
        non_dominated([[1.0, 2.0]], ["lower", "sideways"])


def _row(tech: str, ppl: float | None, amu: float | None, al: float, status: str = "ok",
         ci: dict[str, tuple[float, float]] | None = None) -> dict:
    r = {"cell": f"xs/{tech}", "size": "xs", "technique": tech, "status": status, "ppl": ppl, "amu_gb": amu,
         "al_s_per_iter": al, "tokens_per_s": 100.0, "energy_j_per_token": None,
         "energy_j_per_token__missing": "no RAPL on this host", "amu_gb__missing": None if amu else "sampler failed"}
    for col, (lo, hi) in (ci or {}).items():
        r[col + "__ci_low"], r[col + "__ci_high"] = lo, hi
    return r


def _frame() -> pd.DataFrame:
    return pd.DataFrame([
        _row("mha", 10.0, 2.0, 0.10),
        _row("mqa", 11.0, 1.5, 0.10),
        _row("gqa", 10.5, 1.6, 0.10, ci={"ppl": (10.3, 10.7), "amu_gb": (1.55, 1.65)}),
        _row("gqa2", 10.6, 1.7, 0.10, ci={"ppl": (10.4, 10.8), "amu_gb": (1.6, 1.8)}),
        _row("mla", 9.0, None, 0.20),
        _row("moe", None, None, 0.30, status="oom"),
    ])


def test_axis_front_drops_unmeasured_objectives_and_lists_missing_cells() -> None:
    (f,) = axis_fronts(_frame(), PRETRAIN)
    assert [o.column for o in f.objectives] == ["ppl", "amu_gb", "al_s_per_iter", "tokens_per_s"]
    assert [(o.column, why) for o, why in f.dropped] == [
        ("energy_j_per_token", "not measured in any cell here: no RAPL on this host")]
    status = dict(zip(f.candidates(), zip(f.status, f.detail)))
    assert status["mha"][0] == status["mqa"][0] == status["gqa"][0] == ON
    assert status["gqa2"] == (DOMINATED, "dominated by gqa (within noise)")
    assert status["mla"] == (LEFT_OUT, "AMU (GB) missing (sampler failed)")
    assert status["moe"][0] == LEFT_OUT and status["moe"][1].startswith("status oom")


def test_dominated_beyond_noise_is_not_marked_within_noise() -> None:
    df = pd.DataFrame([_row("a", 10.0, 1.0, 0.1, ci={"ppl": (9.9, 10.1)}),
                       _row("b", 12.0, 1.0, 0.1, ci={"ppl": (11.9, 12.1)})])
    (f,) = axis_fronts(df, PRETRAIN)
    assert f.detail[1] == "dominated by a"


def test_projection_plot_written(tmp_path: Path) -> None:
    (f,) = axis_fronts(_frame(), PRETRAIN)
    made = plot_front(f, tmp_path)
    assert made and (tmp_path / made["png"]).stat().st_size > 0 and (tmp_path / made["svg"]).is_file()
    assert "left out: mla" in made["caption"] and "Energy (J/token)" in made["caption"]
    (few,) = axis_fronts(_frame().iloc[:2], PRETRAIN)
    assert plot_front(few, tmp_path / "few") is None


def test_cells_served_by_another_engine_are_marked() -> None:
    df = _frame()
    df["engine"] = ["vllm", "transformers", "vllm", "vllm", "vllm", "vllm"]
    df["engine_fallback"] = [None, "no int4 kernel in this vLLM build", None, None, None, None]
    (f,) = axis_fronts(df, PRETRAIN)
    text = "\n".join(render_front(f))
    assert "| mqa [F] | xs/mqa |" in text
    assert "- [F] served by transformers, not the configured engine (no int4 kernel in this vLLM build)" in text
