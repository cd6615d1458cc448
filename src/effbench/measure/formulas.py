"""The paper's metric formulas (EfficientLLM, section 5.1) as pure functions.

Every function takes plain numbers or sequences so that it can be checked against a
hand-computed trace. Time averages use the trapezoid rule over the samples that fall
in the window, with values linearly interpolated at the window's edges, so a window
that starts or ends between two samples is weighted exactly by the time it covers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

GB = 1e9  # the paper's tables print decimal gigabytes


def _clip_series(
    ts: Sequence[float], values: Sequence[float], t0: float, t1: float
) -> tuple[list[float], list[float]]:
    """Points of a piecewise-linear series restricted to [t0, t1], edges interpolated."""
    if len(ts) != len(values):
        raise ValueError("timestamps and values differ in length")
    if not ts:
        raise ValueError("no samples")
    if t1 <= t0:
        raise ValueError(f"empty window [{t0}, {t1}]")
    pts = sorted(zip(ts, values))
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]

    def at(t: float) -> float:
        if t <= xs[0]:
            return ys[0]
        if t >= xs[-1]:
            return ys[-1]
        for i in range(1, len(xs)):
            if xs[i] >= t:
                x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
                return y0 if x1 == x0 else y0 + (y1 - y0) * (t - x0) / (x1 - x0)
        return ys[-1]  # pragma: no cover

    out_t = [t0] + [x for x in xs if t0 < x < t1] + [t1]
    out_v = [at(t0)] + [y for x, y in zip(xs, ys) if t0 < x < t1] + [at(t1)]
    return out_t, out_v


def integrate(ts: Sequence[float], values: Sequence[float], t0: float, t1: float) -> float:
    """∫ value dt over [t0, t1] (trapezoid rule)."""
    xt, xv = _clip_series(ts, values, t0, t1)
    return sum((xt[i] - xt[i - 1]) * (xv[i] + xv[i - 1]) / 2 for i in range(1, len(xt)))


def time_average(ts: Sequence[float], values: Sequence[float], t0: float, t1: float) -> float:
    """(1/T) ∫ value dt over the window [t0, t1].

    An average lies between the least and the largest value it averages; the trapezoid sum's
    rounding can step past them (a constant series averaged to one ulp above itself, so AMU read
    above the peak it came from), so the result is held inside that range."""
    xt, xv = _clip_series(ts, values, t0, t1)
    mean = sum((xt[i] - xt[i - 1]) * (xv[i] + xv[i - 1]) / 2 for i in range(1, len(xt))) / (t1 - t0)
    return min(max(mean, min(xv)), max(xv))


def amu_gb(ts: Sequence[float], mem_bytes: Sequence[float], t0: float, t1: float) -> float:
    """AMU, Average Memory Utilization, in GB: (1/T) ∫ Memory_Used(t) dt."""
    return time_average(ts, mem_bytes, t0, t1) / GB


def amu_fraction(
    ts: Sequence[float], mem_bytes: Sequence[float], total_bytes: float, t0: float, t1: float
) -> float:
    """AMU as a fraction of the device's total memory."""
    if total_bytes <= 0:
        raise ValueError("total memory must be positive")
    return time_average(ts, mem_bytes, t0, t1) / total_bytes


def pcu(
    ts: Sequence[float], util_percent: Sequence[float], t0: float, t1: float, peak_percent: float = 100.0
) -> float:
    """PCU, Peak Compute Utilization: (1/T) ∫ Actual_Util(t) / Peak_Util dt (a ratio 0-1)."""
    return time_average(ts, util_percent, t0, t1) / peak_percent


def average_latency(durations_s: Sequence[float]) -> float:
    """AL: Σ (compute_i + communication_i) / N, i.e. the mean wall time per iteration or request."""
    if not durations_s:
        raise ValueError("no iterations")
    return sum(durations_s) / len(durations_s)


def token_throughput(tokens: float, params: float, seconds: float) -> float:
    """TT (pretraining): Σ (tokens_i / params) / Σ time_i, in tokens/param/s."""
    _check_positive(params=params, seconds=seconds)
    return tokens / params / seconds


def sample_throughput(samples: float, params: float, seconds: float) -> float:
    """ST (fine-tuning): Σ (samples_i / params) / Σ time_i, in samples/param/s."""
    _check_positive(params=params, seconds=seconds)
    return samples / params / seconds


def inference_throughput(generated_tokens: float, seconds: float) -> float:
    """IT: Σ generated tokens / Σ time, in tokens/s (not normalised by parameters)."""
    _check_positive(seconds=seconds)
    return generated_tokens / seconds


def average_power_w(energy_j: float, seconds: float) -> float:
    """AEC: (1/T) ∫ P(t) dt = E / T, in W (the paper's "energy" is an average power)."""
    _check_positive(seconds=seconds)
    return energy_j / seconds


def energy_from_power(ts: Sequence[float], watts: Sequence[float], t0: float, t1: float) -> float:
    """Energy in J from polled power (under-samples bursts; prefer an energy counter)."""
    return integrate(ts, watts, t0, t1)


def mfu(flops_per_token: float, tokens: float, seconds: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved analytic FLOP/s over the device's dense peak."""
    _check_positive(seconds=seconds, peak_flops=peak_flops)
    return flops_per_token * tokens / seconds / peak_flops


def mcr(size_orig: float, size_comp: float, perf_comp: float, perf_orig: float) -> float:
    """MCR: (Size_orig / Size_comp) × (Perf_comp / Perf_orig); its interval: spread.mcr_interval."""
    _check_positive(size_comp=size_comp, perf_orig=perf_orig)
    return (size_orig / size_comp) * (perf_comp / perf_orig)


def perplexity(mean_nll: float) -> float:
    """PPL = exp(mean token negative log-likelihood)."""
    return math.exp(mean_nll)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over the mean: how noisy repeated measurements were."""
    if len(values) < 2:
        raise ValueError("need at least two values")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(var) / mean if mean else math.inf


def _check_positive(**named: float) -> None:
    for name, value in named.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
