"""The timed figures of a training window, each with its ratio batch-means interval.

Pretraining and fine-tuning share this: the measured window of n steps is split into ``k``
consecutive sub-windows at steps round(i·n/k), i = 0…k (:func:`step_groups`: ⌊n/k⌋ or ⌈n/k⌉
steps each, none dropped), the loop marks the monitor at the k − 1 inner boundaries
(:func:`boundary_steps`, so only k − 1 extra device syncs and counter reads), and each figure
is a ratio of sums over the sub-windows with the ratio estimator's 95 % interval
(:func:`effbench.measure.spread.ratio_interval`, labelled ``ratio_batch_means_k=<k>``): with
x_i and y_i the sub-window sums, R = Σx / Σy and SE = sqrt(Σ (x_i − R·y_i)² / (k (k − 1))) / (Σy / k),
t on k − 1 df. It is the equal-batch-means interval only when k divides n:

- AL = Σ step time / Σ steps; throughput = Σ units / Σ step time (units: tokens or samples,
  and per parameter for TT / ST);
- AMU, PCU, AEC and energy from :meth:`Window.spread_figures`;
- energy per unit = energy / units (the unit count is exact; its interval is energy's).

With fewer than two measured steps there is nothing to split: the figures carry no interval.
docs/noise.md explains the choice of k and what the interval means.
"""

from __future__ import annotations

from collections.abc import Sequence

from .figure import Figure
from .monitor import ENERGY_FLAGS, Window
from .spread import ratio_batch_means_method

__all__ = ["ENERGY_FLAGS", "SUB_WINDOWS", "boundary_steps", "step_groups", "sub_window_count", "training_figures"]

SUB_WINDOWS = 8  # k: enough replicates for a t interval (df 7), few enough extra syncs


def sub_window_count(steps: int) -> int:
    """k for a window of ``steps`` measured steps (0 or 1: no split)."""
    return min(SUB_WINDOWS, steps) if steps >= 2 else 0


def step_groups(steps: int, k: int) -> list[range]:
    """The k consecutive groups of step indices (0-based), as :meth:`Window.sub_windows` cuts them."""
    cut = [round(i * steps / k) for i in range(k + 1)]
    return [range(cut[i], cut[i + 1]) for i in range(k)]


def boundary_steps(steps: int) -> set[int]:
    """Indices (0-based, within the window) of the steps after which the loop calls ``mon.mark()``."""
    k = sub_window_count(steps)
    return {g.stop - 1 for g in step_groups(steps, k)[:-1]} if k else set()


def training_figures(
    window: Window, step_times: Sequence[float], units_per_step: Sequence[float], params: float, *,
    unit: str, per_param_key: str,
) -> dict[str, Figure | object]:
    """Window figures + AL, the per-parameter throughput (``per_param_key``), ``<unit>s``/s and
    energy per unit, with intervals over the sub-windows the loop marked."""
    n = len(step_times)
    k = sub_window_count(n) if len(window.marks) == sub_window_count(n) - 1 else 0
    fig: dict[str, Figure | object] = dict(window.spread_figures(k) if k else window.figures())
    fig.update(window.energy_flags())
    groups = step_groups(n, k) if k else [range(n)]
    busy = [sum(step_times[i] for i in g) for g in groups]
    units = [sum(units_per_step[i] for i in g) for g in groups]
    method = ratio_batch_means_method(k)
    src = "wall_clock_per_step"
    fig["al_s_per_iter"] = Figure.rate(busy, [float(len(g)) for g in groups], src, method)
    fig[per_param_key] = Figure.rate([u / params for u in units], busy, f"wall_clock_{unit}s/params_total", method)
    fig[f"{unit}s_per_s"] = Figure.rate(units, busy, "wall_clock", method)
    total = sum(units)
    energy = fig["energy_j"]
    assert isinstance(energy, Figure)
    fig[f"energy_j_per_{unit}"] = energy.derive(lambda e: e / total, f"/{unit}s") if total > 0 \
        else Figure.missing(f"no {unit}s were counted")
    return fig
