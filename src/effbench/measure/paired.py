"""Paired comparisons: two precisions of one model scored on the same items.

bf16 and int4 answer the same questions, so their per-item scores are correlated: an item one
gets right the other mostly gets right too. Treating the two accuracies as independent samples
(:func:`effbench.measure.spread.significant`, :func:`~effbench.measure.spread.mcr_interval`)
adds both variances and ignores that covariance, so a real drop of a few items can read as
"not significant". Here the comparison uses the per-item results (``scores.json``'s ``items``,
:mod:`effbench.evaluate.run`):

- :func:`mcnemar_exact` the exact McNemar test: only the discordant items (right at one precision,
  wrong at the other) carry information; under "no difference" each is either way with
  probability 1/2, so the count one way is Binomial(n_discordant, 1/2); two-sided
  p = min(1, 2 · P(B ≤ min(worse, better))).
- :func:`sign_flip_p` its exact generalisation to per-item scores that are fractions (a tie of k
  choices counts 1/k, :mod:`effbench.evaluate.scoring`): under "no difference" the sign of each
  item's difference is + or − with probability 1/2; p is the share of the 2^m sign patterns
  whose |sum| is at least the observed one. With 0/1 scores it is McNemar's test.
- :func:`paired_comparison` the difference of two "Perf" figures (the unweighted mean over tasks
  of per-item means) with its paired standard error (per-item differences: sample variance / n
  per task, tasks independent), the variances and covariance of the two Perfs (for MCR's delta
  method), and the test's p-value over every paired item.
- :func:`ratio_se_paired` the delta-method SE of a / b with the covariance of a and b.

Pure Python (no numpy, no scipy), as :mod:`effbench.measure.spread`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .spread import Z95, Interval

ALPHA = 0.05  # a difference is "significant" when the paired test's two-sided p is below this
# Per-item scores are multiples of 1/12: a tie of k ≤ 4 choices counts 1/k (lcm(1, 2, 3, 4) = 12).
TIE_GRID = 12
MCNEMAR = "mcnemar_exact"
SIGN_FLIP = "sign_flip_exact"


def mcnemar_exact(worse: int, better: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (``worse``: items right at the
    baseline and wrong at the comparison; ``better``: the reverse). No discordant item: 1."""
    n = worse + better
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(worse, better) + 1))
    return min(1.0, float(Fraction(2 * tail, 2**n)))


def _units(diffs: Sequence[float], grid: int) -> list[int]:
    out = []
    for d in diffs:
        u = d * grid
        r = round(u)
        if abs(u - r) > 1e-6:
            raise ValueError(f"per-item difference {d!r} is not a multiple of 1/{grid}")
        if r:
            out.append(r)
    return out


def sign_flip_p(diffs: Sequence[float], grid: int = TIE_GRID) -> float:
    """Two-sided exact sign-flip (permutation) p-value of Σ d over the per-item differences
    ``diffs`` (each a multiple of 1/``grid``): P(|Σ ±|d_i|| ≥ |Σ d_i|) over equally likely signs.
    Items with d = 0 carry no information. Every |d| = 1 (0/1 scores): McNemar's exact test."""
    units = _units(diffs, grid)
    observed = abs(sum(units))
    if not units or observed == 0:
        return 1.0
    sizes = Counter(abs(u) for u in units)
    if set(sizes) == {grid}:
        return mcnemar_exact(sum(u < 0 for u in units), sum(u > 0 for u in units))
    groups = sorted(sizes.items(), key=lambda kv: kv[1])  # the largest group last
    # Exact counts of sign patterns per value of the sum over all groups but the largest.
    dist: dict[int, int] = {0: 1}
    for v, c in groups[:-1]:
        new: defaultdict[int, int] = defaultdict(int)
        for s, w in dist.items():
            for j in range(c + 1):
                new[s + v * (2 * j - c)] += w * math.comb(c, j)
        dist = new
    # The largest group: j of its c items positive adds v (2j − c); count the j that reach the tail.
    v, c = groups[-1]
    cum = [0]
    for j in range(c + 1):
        cum.append(cum[-1] + math.comb(c, j))
    total = 0
    for s, w in dist.items():
        j_hi = -((s - v * c - observed) // (2 * v))  # smallest j with s + v(2j − c) ≥ observed
        j_lo = (v * c - observed - s) // (2 * v)  # largest j with s + v(2j − c) ≤ −observed
        hi = cum[c + 1] - cum[min(max(j_hi, 0), c + 1)]
        lo = cum[min(j_lo, c) + 1] if j_lo >= 0 else 0
        total += w * (hi + lo)
    return min(1.0, float(Fraction(total, 2 ** len(units))))


def ratio_se_paired(a: float, var_a: float, b: float, var_b: float, cov: float) -> float:
    """Delta-method SE of a / b with Cov(a, b): Var ≈ var_a/b² + a²·var_b/b⁴ − 2a·cov/b³."""
    var = var_a / b**2 + a**2 * var_b / b**4 - 2 * a * cov / b**3
    return math.sqrt(max(var, 0.0))


def _moments(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float, float, float]:
    """(mean x, mean y, var of mean x, var of mean y, cov of the means): sample (n − 1) moments / n."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    if n < 2:
        return mx, my, 0.0, 0.0, 0.0
    sxx = sum((a - mx) ** 2 for a in x) / (n - 1)
    syy = sum((b - my) ** 2 for b in y) / (n - 1)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / (n - 1)
    return mx, my, sxx / n, syy / n, sxy / n


@dataclass(frozen=True)
class PairedComparison:
    """A comparison precision against the baseline on the same items (over ``tasks`` tasks).

    ``comp`` / ``base``: the two Perfs from the paired items (unweighted mean over tasks of the
    per-item means), ``var_*`` / ``cov``: their variances and covariance, ``worse`` / ``better``:
    the discordant mass (items for 0/1 scores) where the comparison scored below / above the
    baseline, ``p_value``: the two-sided exact test over every paired item (``test``)."""

    n: int
    tasks: int
    comp: float
    base: float
    var_comp: float
    var_base: float
    cov: float
    worse: float
    better: float
    p_value: float
    test: str

    @property
    def diff(self) -> float:
        return self.comp - self.base

    @property
    def se_diff(self) -> float:
        """SE of the difference from the per-item differences (Var a + Var b − 2 Cov)."""
        return math.sqrt(max(self.var_comp + self.var_base - 2 * self.cov, 0.0))

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def diff_interval(self) -> Interval:
        """Normal 95 % interval of comp − base on the per-item differences (``paired_normal``)."""
        h = Z95 * self.se_diff
        return Interval(self.diff - h, self.diff + h, self.n, "paired_normal")

    def ratio_se(self) -> float:
        """Delta-method SE of comp / base with the paired covariance."""
        return ratio_se_paired(self.comp, self.var_comp, self.base, self.var_base, self.cov)


def paired_comparison(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> PairedComparison:
    """``pairs``: per task, (comparison scores, baseline scores) on the same items in the same
    order. Perf = the unweighted mean over tasks of the item means (as the tables' Perf); tasks
    are independent, so Var(Perf) = Σ Var(task mean) / k² and likewise the covariance."""
    if not pairs or any(len(x) != len(y) or not x for x, y in pairs):
        raise ValueError("every task needs the same non-empty items at both precisions")
    k = len(pairs)
    comp = base = var_c = var_b = cov = 0.0
    diffs: list[float] = []
    for x, y in pairs:
        mx, my, vx, vy, cxy = _moments(x, y)
        comp, base = comp + mx / k, base + my / k
        var_c, var_b, cov = var_c + vx / k**2, var_b + vy / k**2, cov + cxy / k**2
        diffs += [a - b for a, b in zip(x, y)]
    binary = all(abs(d) == 1.0 for d in diffs if d)  # every discordant item right at one, wrong at the other
    return PairedComparison(
        n=len(diffs), tasks=k, comp=comp, base=base, var_comp=var_c, var_base=var_b, cov=cov,
        worse=sum(-d for d in diffs if d < 0), better=sum(d for d in diffs if d > 0),
        p_value=sign_flip_p(diffs), test=MCNEMAR if binary else SIGN_FLIP)
