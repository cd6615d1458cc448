"""Noise on a measured figure: 95 % confidence intervals, batch means, ratios, significance.

Pure functions over plain numbers (no scipy in the driver venv):

- :func:`t_quantile` the Student-t quantile, exact for integer degrees of freedom;
- :func:`mean_interval` the t-based 95 % CI of a mean over n independent replicates
  (serving repeats, or the k sub-window means of a training window);
- :func:`batch_means` k equal sub-windows of a per-step series (batch means);
  :func:`ratio_batch_means_method` the label of a training window's intervals (k unequal
  sub-windows through :func:`ratio_interval`);
- :func:`ratio_interval` a rate Σx / Σy (tokens/s, J/token) over k sub-windows, with the
  ratio estimator's delta-method standard error;
- :func:`eval_batches_interval` a mean loss over evaluation batches (each batch a replicate),
  and :func:`exp_interval` its exp (perplexity);
- :func:`mcr_interval` MCR = size ratio × Perf_q / Perf_base with the delta-method SE from
  the two accuracies' standard errors;
- :func:`around` an interval centred on a pooled value, sized by its replicates' t spread;
- :func:`quantile_interval` the distribution-free (order-statistic) 95 % interval of a
  percentile of pooled values, and :func:`hull` the smallest interval holding two;
- :func:`significant` / :func:`difference_label` |a − b| > 2·sqrt(se_a² + se_b²);
- :func:`requests_for_percentile` how many values (requests pooled over the repeats) a q-th
  percentile needs before it is reported.

Figures carry these through :class:`effbench.measure.figure.Figure` (``over_replicates``,
``batch_means``, ``rate``, ``with_interval``).

Every interval contains its own value, and the interval of a figure that cannot be negative
(a mean or a ratio of non-negative replicates: times, memory, energy, tokens; MCR; an accuracy)
never reaches below zero: a symmetric t interval with few replicates can (12.7 × sd / √2 with
two serving repeats), and is then cut at 0. Cutting keeps the coverage (the true value is not
below 0), so the interval is no longer symmetric there; :func:`se_from_interval` backs the SE
out of the uncut side when it is given the value.

docs/noise.md says which noise each figure carries and how these are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95  # every interval in the record is a 95 % interval
Z95 = 1.959963984540054  # normal 97.5 % quantile (for SEs from large samples, e.g. lm-eval)


@dataclass(frozen=True)
class Interval:
    """A 95 % interval [low, high] from n independent replicates, by ``method``."""

    low: float
    high: float
    n: int
    method: str  # e.g. "t_repeats", "batch_means_k=8", "delta_method"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"bad interval [{self.low}, {self.high}]")

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        term, acc = math.cos(theta), 0.0
        if df > 1:
            acc = term
            for k in range(3, df - 1, 2):  # terms cos^(k)θ · (2·4···(k−1)) / (1·3···k)
                term *= c2 * (k - 1) / k
                acc += term
        return 2 / math.pi * (theta + s * acc)
    term, acc = 1.0, 1.0
    for k in range(2, df - 1, 2):  # terms cos^(k)θ · (1·3···(k−1)) / (2·4···k)
        term *= c2 * (k - 1) / k
        acc += term
    return s * acc


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with df degrees of freedom."""
    if not 0.5 < p < 1:
        raise ValueError("p must be in (0.5, 1)")
    if df < 1:
        raise ValueError("need at least one degree of freedom")
    mass = 2 * p - 1
    if df > 2000:  # the series is O(df); Cornish-Fisher is exact to < 1e-7 here
        z = _normal_quantile(p)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < mass:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided_mass(mid, df) < mass else (lo, mid)
    return (lo + hi) / 2


def _normal_quantile(p: float) -> float:
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2)) < p else (lo, mid)
    return (lo + hi) / 2


def t95(df: int) -> float:
    """The two-sided 95 % critical value of Student's t."""
    return t_quantile(0.5 + LEVEL / 2, df)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1)."""
    if len(values) < 2:
        raise ValueError("need at least two values for a spread")
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _nonnegative(*groups: Sequence[float]) -> bool:
    return all(v >= 0 for g in groups for v in g)


def _cut(low: float, nonnegative: bool) -> float:
    """The lower end of an interval of a figure that cannot be negative: not below 0."""
    return max(low, 0.0) if nonnegative else low


def mean_interval(values: Sequence[float], method: str = "t_repeats",
                  nonnegative: bool | None = None) -> tuple[float, Interval]:
    """The mean of n independent replicates and its t-based 95 % CI (n >= 2).

    nonnegative: the mean cannot be negative, so the interval is cut at 0 (default: whether
    every replicate is >= 0, as for times, sizes, counts and energies)."""
    m, sd = mean_sd(values)
    h = t95(len(values) - 1) * sd / math.sqrt(len(values))
    cut = _nonnegative(values) if nonnegative is None else nonnegative
    return m, Interval(_cut(m - h, cut), m + h, len(values), method)


def around(value: float, replicates: Sequence[float], method: str = "t_repeats",
           nonnegative: bool | None = None) -> Interval:
    """A 95 % interval centred on ``value`` (a statistic over the pooled data) whose half-width is
    the t interval's of the same statistic over n >= 2 independent replicates (e.g. serving
    repeats); cut at 0 when it cannot be negative (default: value and replicates all >= 0)."""
    _, sd = mean_sd(replicates)
    h = t95(len(replicates) - 1) * sd / math.sqrt(len(replicates))
    cut = _nonnegative([value], replicates) if nonnegative is None else nonnegative
    return Interval(_cut(value - h, cut), value + h, len(replicates), method)


def batch_means(values: Sequence[float], k: int) -> list[float]:
    """Means of k equal consecutive sub-windows of a per-step series.

    The first len % k steps are dropped so every batch has the same length (they are
    the earliest, warmest-up steps of the window). Needs at least one step per batch.
    """
    if k < 2:
        raise ValueError("need k >= 2 batches for a spread")
    size = len(values) // k
    if size < 1:
        raise ValueError(f"{len(values)} steps cannot fill {k} batches")
    tail = list(values)[len(values) - size * k :]
    return [sum(tail[i * size : (i + 1) * size]) / size for i in range(k)]


def batch_means_interval(values: Sequence[float], k: int) -> tuple[float, Interval]:
    """Mean of a per-step series with a 95 % CI from k equal batch means (k − 1 df), labelled
    ``batch_means_k=<k>``. The training stages use :func:`ratio_batch_means_method` instead."""
    return mean_interval(batch_means(values, k), f"batch_means_k={k}")


def ratio_batch_means_method(k: int) -> str:
    """The label of an interval over k consecutive sub-windows of *unequal* size, each a
    (numerator, denominator) sum, by :func:`ratio_interval`: ``ratio_batch_means_k=<k>``.

    This is what a training window gets (AL, throughput, AMU, PCU, AEC, energy): its n steps are
    cut at round(i·n/k), i = 0…k (groups of ⌊n/k⌋ or ⌈n/k⌉ steps, none dropped), and the value is
    the whole window's ratio Σx / Σy; it equals the equal-batch :func:`batch_means_interval` only
    when k divides n (docs/noise.md)."""
    return f"ratio_batch_means_k={k}"


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], method: str,
                   nonnegative: bool | None = None) -> tuple[float, Interval]:
    """R = Σx / Σy over k sub-windows (e.g. tokens and seconds) with a 95 % CI.

    The ratio estimator's delta-method SE: sqrt(Σ (x_i − R·y_i)² / (k (k − 1))) / mean(y),
    with t on k − 1 degrees of freedom. Sub-windows of unequal length are weighted by y.
    nonnegative: R cannot be negative, so the interval is cut at 0 (default: whether every x and
    y is >= 0: tokens, seconds, joules, byte-seconds).
    """
    k = len(numerators)
    if k != len(denominators):
        raise ValueError("numerators and denominators differ in length")
    if k < 2:
        raise ValueError("need at least two sub-windows for a spread")
    sx, sy = sum(numerators), sum(denominators)
    if sy <= 0:
        raise ValueError("denominators must sum to a positive number")
    r = sx / sy
    resid = sum((x - r * y) ** 2 for x, y in zip(numerators, denominators))
    se = math.sqrt(resid / (k * (k - 1))) / (sy / k)
    h = t95(k - 1) * se
    cut = _nonnegative(numerators, denominators) if nonnegative is None else nonnegative
    return r, Interval(_cut(r - h, cut), r + h, k, method)


EVAL_BATCHES = "t_eval_batches"  # the label of a validation / held-out loss's interval


def eval_batches_interval(losses: Sequence[float], weights: Sequence[float],
                          method: str = EVAL_BATCHES) -> tuple[float, Interval]:
    """The mean loss over k >= 2 evaluation batches, Σ w_b·l_b / Σ w_b (l_b: batch b's mean loss,
    w_b: its weight in the figure, e.g. its tokens), with a 95 % interval that takes each batch as an
    independent replicate: :func:`ratio_interval`'s SE, t on k − 1 df, cut at 0 (a loss is not
    negative). With equal weights this is exactly the t interval of the k batch means
    (:func:`mean_interval`); a short last batch counts for what it holds."""
    if len(losses) != len(weights):
        raise ValueError("losses and weights differ in length")
    return ratio_interval([x * w for x, w in zip(losses, weights)], weights, method, nonnegative=True)


def exp_interval(iv: Interval) -> Interval:
    """exp of both ends (a perplexity from a mean NLL's interval): exp is increasing, so
    exp(low) <= exp(mean) <= exp(high) exactly when low <= mean <= high, the same coverage.
    Labelled ``exp(<method>)``; not symmetric around exp(mean)."""
    return Interval(math.exp(iv.low), math.exp(iv.high), iv.n, f"exp({iv.method})")


def ratio_se(a: float, se_a: float, b: float, se_b: float) -> float:
    """Delta-method SE of a / b for independent a, b."""
    if b == 0 or a == 0:
        raise ValueError("the delta method needs non-zero a and b")
    return abs(a / b) * math.sqrt((se_a / a) ** 2 + (se_b / b) ** 2)


def mcr_interval(
    size_ratio: float, perf_q: float, se_q: float, perf_base: float, se_base: float, n: int
) -> tuple[float, Interval]:
    """MCR = size_ratio × perf_q / perf_base with a normal 95 % CI (delta method).

    The sizes are exact; the accuracies are independent means with standard errors from
    the harness (large samples, hence z rather than t). n: evaluated items behind them.
    Cut at 0 where it would reach below (sizes and accuracies are not negative).
    """
    value = size_ratio * perf_q / perf_base
    h = Z95 * size_ratio * ratio_se(perf_q, se_q, perf_base, se_base)
    return value, Interval(_cut(value - h, _nonnegative([size_ratio, perf_q, perf_base])), value + h, n,
                           "delta_method")


def _binomial_cdf(n: int, p: float) -> tuple[int, list[float]]:
    """(k0, F) with F[i] = P(B <= k0 + i) for B ~ Binomial(n, p), over the k where the CDF moves
    (k0 ± 12 standard deviations; outside, it is 0 or 1 to double precision)."""
    sd = math.sqrt(n * p * (1 - p))
    k0, k1 = max(0, math.floor(n * p - 12 * sd - 2)), min(n, math.ceil(n * p + 12 * sd + 2))
    lp, lq, lg = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    acc, out = 0.0, []
    for k in range(k0, k1 + 1):
        acc += math.exp(lg - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq)
        out.append(min(acc, 1.0))
    return k0, out


def quantile_interval(values: Sequence[float], q: float, level: float = LEVEL) -> Interval | None:
    """The distribution-free 95 % interval of the q-th percentile from n independent values:
    order statistics [x_(l), x_(u)] with P(l <= B < u) >= level for B ~ Binomial(n, q/100), the
    number of values below the true percentile (Hahn & Meeker, Statistical Intervals, 5.2), widened
    to hold the two order statistics the linear-interpolation percentile lies between, so the
    interval lies within the data and holds :func:`effbench.measure.formulas.percentile`'s value.
    None when n values cannot bracket the percentile at that level (p99 needs n >= 368, p90 36,
    p50 6; :func:`requests_for_percentile`)."""
    if not 0 < q < 100:
        raise ValueError("q must be in (0, 100)")
    xs = sorted(values)
    n = len(xs)
    if n < 2:
        return None
    tail = (1 - level) / 2
    k0, cdf = _binomial_cdf(n, q / 100)

    def F(k: int) -> float:  # P(B <= k)
        return 0.0 if k < k0 else (1.0 if k - k0 >= len(cdf) else cdf[k - k0])

    if F(0) > tail or F(n - 1) < 1 - tail:
        return None
    low = max(r for r in range(1, n + 1) if F(r - 1) <= tail)  # 1-based ranks
    high = min(r for r in range(1, n + 1) if F(r - 1) >= 1 - tail)
    pos = (n - 1) * q / 100  # 0-based position of the interpolated percentile
    low, high = min(low, math.floor(pos) + 1), max(high, math.ceil(pos) + 1)
    return Interval(xs[low - 1], xs[high - 1], n, "order_statistic")


def hull(a: Interval, b: Interval, n: int, method: str) -> Interval:
    """The smallest interval holding both (each a 95 % interval: the hull covers at least as often)."""
    return Interval(min(a.low, b.low), max(a.high, b.high), n, method)


PERCENTILE_TAIL = 5  # values a reported percentile needs beyond it (docs/noise.md)


def requests_for_percentile(q: float, tail: int = PERCENTILE_TAIL) -> int:
    """Values a q-th percentile needs so that at least ``tail`` of them lie beyond it (above it for
    q >= 50, below it under 50): p50 10, p90 50, p99 500 with 5 in the tail. With fewer, the
    percentile is set by the one or two most extreme values. The serving latencies count the values
    pooled over every repeat of the load point, as the percentile is taken over them
    (:func:`effbench.inference.latency.latency_figures`)."""
    if not 0 < q < 100:
        raise ValueError("q must be in (0, 100)")
    return math.ceil(tail / (min(q, 100 - q) / 100) - 1e-9)


def significant(a: float, se_a: float, b: float, se_b: float) -> bool:
    """Whether two independent estimates differ by more than 2 combined standard errors."""
    return abs(a - b) > 2 * math.sqrt(se_a**2 + se_b**2)


def difference_label(a: float, se_a: float, b: float, se_b: float) -> str:
    return "significant" if significant(a, se_a, b, se_b) else "not significant"


NORMAL_METHODS = ("delta_method", "normal_se")  # intervals built with z, not t


def normal_interval(value: float, se: float, n: int, lower: float | None = None,
                    upper: float | None = None) -> Interval:
    """value ± 1.96·se: an estimate over many items with a known SE (e.g. an lm-eval accuracy),
    cut to [lower, upper] where the estimate cannot leave them (an accuracy: 0 and 1)."""
    low, high = value - Z95 * se, value + Z95 * se
    return Interval(low if lower is None else max(low, lower), high if upper is None else min(high, upper), n,
                    "normal_se")


def se_from_interval(iv: Interval, value: float | None = None) -> float:
    """Back out a standard error from a 95 % interval (z for normal methods, else t on n − 1 df).

    value: the figure's value; the SE then comes from the longer side of the interval, so an
    interval cut at 0 (or at 1) still gives its uncut SE."""
    crit = Z95 if iv.method in NORMAL_METHODS or iv.n < 2 else t95(iv.n - 1)
    half = iv.half_width if value is None else max(iv.high - value, value - iv.low, 0.0)
    return half / crit
