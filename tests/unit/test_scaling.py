"""Scaling fits: a known crossing recovered within its stated error (and the error honest over
many draws), parallel fits claim no crossing, too few sizes draw no line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from effbench.decision.axes import FINETUNE
from effbench.decision.scaling import (TOKENS_TERM, TOO_FEW, Fit, NoFit, Series, axis_series, crossing, crossings, fit,
                                       plot_all, render)

SIZES = np.geomspace(1e7, 1e10, 6)
# loss-like: log y = a + b·log N. A falls faster than B; they cross at log N* = (1.0 − 2.0)/(−0.10 + 0.05) = 20.
TRUE_A, TRUE_B = (2.0, -0.10), (1.0, -0.05)
TRUE_CROSS = math.exp(20.0)


def _draw(rng: np.random.Generator, a: float, b: float, sigma: float = 0.01) -> np.ndarray:
    return np.exp(a + b * np.log(SIZES) + rng.normal(0, sigma, SIZES.size))


def test_known_crossing_recovered_within_its_stated_error() -> None:
    rng = np.random.default_rng(3)
    fa, fb = fit(SIZES, _draw(rng, *TRUE_A)), fit(SIZES, _draw(rng, *TRUE_B))
    assert isinstance(fa, Fit) and isinstance(fb, Fit)
    c = crossing(fa, fb)
    assert c.established and c.note == "within the measured sizes"
    assert c.low <= TRUE_CROSS <= c.high
    assert c.high / c.low < 3  # a usable interval, not a vacuous one


def test_crossing_interval_covers_about_95_percent() -> None:
    rng = np.random.default_rng(42)
    hits, draws = 0, 400
    for _ in range(draws):
        c = crossing(fit(SIZES, _draw(rng, *TRUE_A, 0.03)), fit(SIZES, _draw(rng, *TRUE_B, 0.03)))
        hits += bool(c.established and c.low <= TRUE_CROSS <= c.high)
    assert 0.90 <= hits / draws <= 0.99, hits / draws


def test_parallel_fits_claim_no_crossing() -> None:
    rng = np.random.default_rng(5)
    c = crossing(fit(SIZES, _draw(rng, 2.0, -0.1)), fit(SIZES, _draw(rng, 1.0, -0.1)))
    assert not c.established and "no crossing established" in c.note


def test_slope_interval_and_bands_cover_the_truth() -> None:
    rng = np.random.default_rng(9)
    f = fit(SIZES, _draw(rng, *TRUE_A, 0.02))
    lo, hi = f.slope_interval()
    assert lo <= TRUE_A[1] <= hi and f.df == SIZES.size - 2
    p = f.predict([1e8])
    truth = math.exp(TRUE_A[0] + TRUE_A[1] * math.log(1e8))
    assert p["pred_low"][0] <= p["conf_low"][0] <= truth <= p["conf_high"][0] <= p["pred_high"][0]


def test_tokens_enter_only_where_they_vary() -> None:
    rng = np.random.default_rng(1)
    n = np.repeat(SIZES[:3], 2)
    d = np.tile([1e9, 4e9], 3)
    y = np.exp(1.0 - 0.1 * np.log(n) - 0.2 * np.log(d) + rng.normal(0, 0.001, n.size))
    f = fit(n, y, d)
    assert f.with_tokens and abs(f.coef[2] + 0.2) < 0.01
    assert not fit(SIZES, _draw(rng, *TRUE_A), np.full(SIZES.size, 1e9)).with_tokens


def test_one_token_count_per_size_adds_no_tokens_term() -> None:
    # full rank (D not proportional to N), but D never varies within a size: its slope would be N's
    rng = np.random.default_rng(2)
    d = np.array([1e9, 4e9, 2e9, 8e9, 1e9, 3e9])
    f = fit(SIZES, _draw(rng, *TRUE_A), d)
    assert isinstance(f, Fit) and not f.with_tokens and f.coef.size == 2


def test_a_fit_with_a_tokens_term_draws_points_and_no_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, d = np.repeat(SIZES[:3], 2), np.tile([1e9, 4e9], 3)
    y = np.exp(1.0 - 0.1 * np.log(n) - 0.2 * np.log(d) + rng.normal(0, 0.001, n.size))
    f = fit(n, y, d)
    assert isinstance(f, Fit) and f.with_tokens
    s = Series(FINETUNE, FINETUNE.objectives[0], "", (), "lora", n.tolist(), y.tolist(), [], f)
    (plot,) = plot_all([s], tmp_path)
    assert plot["caption"] == (f"{FINETUNE.objectives[0].label} against model size; {TOKENS_TERM}, points only "
                               "(fit in the table): lora.")


def test_non_positive_values_are_fitted_on_a_linear_scale() -> None:
    y = 0.5 * np.log(SIZES) - 10  # negative at the small sizes
    f = fit(SIZES, y)
    assert not f.log_y and abs(f.slope - 0.5) < 1e-9


def test_too_few_sizes_to_fit() -> None:
    assert isinstance(fit([1e6, 1e7], [1.0, 0.9]), NoFit)
    few = fit([1e6, 1e6, 1e7], [1.0, 1.1, 0.9])  # three points, two sizes
    assert isinstance(few, NoFit) and few.reason.startswith(TOO_FEW)


def _ft_rows(sizes_by_method: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for m, sizes in sizes_by_method.items():
        for i, n in enumerate(sizes):
            loss = 2.0 * n ** (-0.05 if m == "lora" else -0.08)
            rows.append({"cell": f"m{i}/t/{m}", "model": f"m{i}", "task": "t", "method": m, "status": "ok",
                         "params_total": n, "val_loss": loss})
    return pd.DataFrame(rows)


def test_over_a_frame_too_few_sizes_says_so_and_draws_nothing(tmp_path: Path) -> None:
    df = _ft_rows({"lora": [1e8, 1e9], "rslora": [1e8, 1e9]})
    series = axis_series(df, FINETUNE)
    assert [(s.objective.column, type(s.result)) for s in series] == [("val_loss", NoFit), ("val_loss", NoFit)]
    text = render(series, crossings(series))
    row = "| finetune | task = t | lora | 2 | too few sizes to fit (2 measured, 3 needed): none of Held-out loss |"
    assert row in text
    assert "no crossing is claimed" in text
    assert plot_all(series, tmp_path) == [] and not list(tmp_path.rglob("*.png"))


def test_a_fit_is_drawn_with_its_bands_and_the_unfitted_points(tmp_path: Path) -> None:
    df = _ft_rows({"lora": [1e8, 1e9, 1e10], "rslora": [1e8, 1e9]})
    (plot,) = plot_all(axis_series(df, FINETUNE), tmp_path)
    assert plot["png"] == "plots/decision/scaling_finetune_val_loss_t.png" and (tmp_path / plot["svg"]).is_file()
    assert plot["caption"] == ("Held-out loss against model size; fitted: lora (line, 95 % confidence band shaded, "
                               "95 % prediction band dotted); too few sizes to fit, points only: rslora.")


def test_over_a_frame_fits_cross_where_the_methods_do() -> None:
    sizes = [1e8, 1e9, 1e10, 1e11]
    df = _ft_rows({"lora": sizes, "rslora": sizes})
    df.loc[df["method"] == "rslora", "val_loss"] *= 2.0  # rslora starts higher and falls faster
    series = [s for s in axis_series(df, FINETUNE) if s.objective.column == "val_loss"]
    assert all(isinstance(s.result, Fit) for s in series)
    (c,) = crossings(series)
    assert (c["a"], c["b"], c["group"]) == ("lora", "rslora", "task = t")
    # exact power laws: 2·N^−0.05 = 4·N^−0.08 at N = 2^(1/0.03) ≈ 1.1e10, inside the sizes
    assert c["size"] is not None and math.isclose(c["size"], 2 ** (1 / 0.03), rel_tol=1e-6)
