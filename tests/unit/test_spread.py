"""Confidence intervals, batch means, ratio and MCR intervals, significance: against known values."""

import math

import pytest

from effbench.measure import spread
from effbench.measure.figure import Figure
from effbench.record import flatten


@pytest.mark.parametrize(
    "df, t",  # two-sided 95 % critical values from standard t tables (R: qt(0.975, df))
    [(1, 12.706205), (2, 4.302653), (3, 3.182446), (4, 2.776445), (9, 2.262157), (29, 2.045230),
     (120, 1.979930), (5000, 1.960439)],
)
def test_t95_matches_tables(df, t):
    assert spread.t95(df) == pytest.approx(t, abs=2e-6)


def test_other_quantiles_and_bad_input():
    assert spread.t_quantile(0.995, 10) == pytest.approx(3.169273, abs=2e-6)
    with pytest.raises(ValueError):
        spread.t_quantile(0.4, 5)
    with pytest.raises(ValueError):
        spread.t95(0)


def test_mean_interval_by_hand():
    # mean 2, sd 1, n 3: half-width 4.302653 / sqrt(3) = 2.484
    m, iv = spread.mean_interval([1.0, 2.0, 3.0], nonnegative=False)
    assert m == 2.0 and iv.n == 3 and iv.method == "t_repeats"
    assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    assert (iv.low + iv.high) / 2 == pytest.approx(2.0)
    # Replicates that are all >= 0 (times, sizes): the mean cannot be negative, the interval is cut at 0.
    m, cut = spread.mean_interval([1.0, 2.0, 3.0])
    assert cut.low == 0.0 and cut.high == pytest.approx(iv.high) and cut.low <= m <= cut.high
    # ... and the SE is backed out of its uncut side when the value is given.
    assert spread.se_from_interval(cut, m) == pytest.approx(1 / math.sqrt(3))
    assert spread.mean_interval([10.0, 11.0, 12.0])[1].low == pytest.approx(11 - 4.302653 / math.sqrt(3), abs=1e-6)
    assert spread.mean_interval([-1.0, 2.0, 3.0])[1].low < 0  # a signed quantity keeps its interval
    with pytest.raises(ValueError):
        spread.mean_interval([1.0])


def test_batch_means_drop_the_earliest_remainder():
    # 10 steps into 3 batches of 3: the first step is dropped
    assert spread.batch_means([100, 1, 1, 1, 2, 2, 2, 3, 3, 3], 3) == [1, 2, 3]
    m, iv = spread.batch_means_interval([100, 1, 1, 1, 2, 2, 2, 3, 3, 3], 3)
    assert m == 2 and iv.method == "batch_means_k=3" and iv.n == 3
    with pytest.raises(ValueError):
        spread.batch_means([1.0, 2.0], 3)


def test_ratio_batch_means_is_batch_means_only_when_k_divides_the_steps():
    # Issue #19 item 9: the training windows' label says what the interval is (docs/noise.md).
    assert spread.ratio_batch_means_method(8) == "ratio_batch_means_k=8"
    times = [0.30, 0.10, 0.12, 0.09, 0.20, 0.11, 0.10, 0.13, 0.10, 0.08, 0.12, 0.10, 0.11, 0.09, 0.10, 0.25]

    def ratio(steps, k):  # AL over k groups cut at round(i·n/k): Σ time / Σ steps
        cut = [round(i * len(steps) / k) for i in range(k + 1)]
        return spread.ratio_interval([sum(steps[a:b]) for a, b in zip(cut, cut[1:])],
                                     [float(b - a) for a, b in zip(cut, cut[1:])], spread.ratio_batch_means_method(k))

    # 16 steps into 8 groups of 2: the same value and interval as 8 equal batch means
    r, iv = ratio(times, 8)
    m, bm = spread.batch_means_interval(times, 8)
    assert r == pytest.approx(m) and (iv.low, iv.high) == pytest.approx((bm.low, bm.high))
    # 18 steps: groups of 2 and 3 (none dropped) against 8 batches of 2 (the first 2 dropped): they differ
    r, iv = ratio(times[:16] + [0.10, 0.11], 8)
    m, bm = spread.batch_means_interval(times[:16] + [0.10, 0.11], 8)
    assert r == pytest.approx(sum(times[:16] + [0.10, 0.11]) / 18) and iv.method == "ratio_batch_means_k=8"
    assert abs(iv.half_width / bm.half_width - 1) > 0.05 and bm.method == "batch_means_k=8"


def test_ratio_interval_is_the_pooled_rate_with_a_ratio_estimator_se():
    tokens, secs = [100.0, 120.0, 80.0, 100.0], [1.0, 1.0, 1.0, 1.0]
    r, iv = spread.ratio_interval(tokens, secs, "batch_means_k=4")
    assert r == pytest.approx(100.0)
    # equal denominators: same as the t interval of the per-window rates
    _, t_iv = spread.mean_interval([100.0, 120.0, 80.0, 100.0])
    assert iv.half_width == pytest.approx(t_iv.half_width)
    # a constant rate over unequal windows has no spread
    r, iv = spread.ratio_interval([50.0, 150.0], [0.5, 1.5], "m")
    assert r == pytest.approx(100.0) and iv.half_width == pytest.approx(0.0, abs=1e-9)


def test_mcr_interval_delta_method():
    # The paper's check: 4 × 0.4361 / 0.4719, with SEs of 0.01 on each accuracy.
    value, iv = spread.mcr_interval(4.0, 0.4361, 0.01, 0.4719, 0.01, n=1000)
    assert value == pytest.approx(3.6965, abs=5e-5)
    se = (0.4361 / 0.4719) * math.sqrt((0.01 / 0.4361) ** 2 + (0.01 / 0.4719) ** 2)
    assert iv.half_width == pytest.approx(1.959964 * 4 * se, rel=1e-6)
    assert iv.method == "delta_method"
    assert spread.se_from_interval(iv) == pytest.approx(4 * se, rel=1e-6)
    assert spread.se_from_interval(spread.normal_interval(0.5, 0.02, 1000)) == pytest.approx(0.02)


def test_requests_for_percentile():
    assert spread.requests_for_percentile(99) == 500
    assert spread.requests_for_percentile(90) == 50
    assert spread.requests_for_percentile(50, tail=1) == 2


def test_significance_at_two_combined_standard_errors():
    # 2 · sqrt(0.03² + 0.04²) = 0.1
    assert spread.difference_label(0.50, 0.03, 0.61, 0.04) == "significant"
    assert spread.difference_label(0.50, 0.03, 0.59, 0.04) == "not significant"


def test_figure_interval_columns_and_derive():
    _, iv = spread.mean_interval([9.0, 10.0, 11.0])
    fig = Figure.of(10.0, "wall_clock", iv)
    cols = flatten({"aec_w": fig})
    assert cols["aec_w__ci_low"] == iv.low and cols["aec_w__ci_high"] == iv.high
    assert cols["aec_w__ci_n"] == 3 and cols["aec_w__ci_method"] == "t_repeats"
    neg = fig.derive(lambda v: -2 * v, "/x")
    assert neg.interval.low == pytest.approx(-2 * iv.high) and neg.interval.high == pytest.approx(-2 * iv.low)
    missing = flatten({"aec_w": Figure.missing("no counter")})
    assert missing["aec_w__ci_low"] is None and missing["aec_w__ci_n"] is None
    with pytest.raises(ValueError):
        Figure(None, "unavailable", "why", iv)
    assert Figure.missing("why").with_interval(iv).interval is None


def test_figure_constructors_over_replicates_batches_and_rates():
    fig = Figure.over_replicates([1.0, 2.0, 3.0], "wall_clock_per_repeat")
    assert fig.value == 2.0 and fig.interval.high - 2.0 == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    assert fig.interval.low == 0.0  # 2 − 2.48 cut at 0: a time is not negative
    assert Figure.over_replicates([5.0], "x").interval is None
    assert Figure.over_replicates([], "x").missing_reason == "no replicates were measured"
    steps = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 7.0]
    al = Figure.batch_means(steps, 3, "wall_clock_per_step")
    assert al.value == pytest.approx(2.5) and al.interval.method == "batch_means_k=3"
    # batches of the last 9 steps: 1.33, 2.33, 4.33 -> the half-width of their t interval
    _, iv = spread.mean_interval([4 / 3, 7 / 3, 13 / 3])
    assert al.interval.half_width == pytest.approx(iv.half_width)
    assert Figure.batch_means([1.0, 2.0], 3, "x").interval is None
    tps = Figure.rate([100.0, 120.0], [1.0, 1.0], "wall_clock", "batch_means_k=2")
    assert tps.value == pytest.approx(110.0) and tps.interval.n == 2


def test_ratio_and_mcr_intervals_of_non_negative_figures_stop_at_zero():
    # Two sub-windows of very different rates (t on 1 df: 12.7 × se): R = 40 / 4 = 10,
    # se = sqrt(((5 − 20)² + (35 − 20)²) / 2) / 2 = 7.5, half-width 95.3: [−85.3, 105.3] uncut.
    r, iv = spread.ratio_interval([5.0, 35.0], [2.0, 2.0], "batch_means_k=2")
    assert r == pytest.approx(10.0)
    assert iv.low == 0.0 and iv.high == pytest.approx(10.0 + 12.706205 * 7.5, rel=1e-6)
    assert spread.se_from_interval(iv, r) == pytest.approx(7.5, rel=1e-6)  # from the uncut side
    _, signed = spread.ratio_interval([5.0, 35.0], [2.0, 2.0], "m", nonnegative=False)
    assert signed.low == pytest.approx(10.0 - 12.706205 * 7.5, rel=1e-6)
    # MCR near 0 with a wide accuracy SE: cut at 0, the upper side as the delta method gives it.
    value, iv = spread.mcr_interval(4.0, 0.02, 0.03, 0.40, 0.03, n=50)
    assert iv.low == 0.0 and iv.high > value
    # An accuracy stays within [0, 1].
    acc = spread.normal_interval(0.98, 0.02, 50, 0.0, 1.0)
    assert acc.high == 1.0 and acc.low == pytest.approx(0.98 - 1.959964 * 0.02, rel=1e-6)
    assert spread.normal_interval(0.01, 0.02, 50, 0.0, 1.0).low == 0.0


def test_around_centres_on_the_pooled_value():
    # A pooled statistic of 0.9 with per-repeat values 0.5 and 0.8: the t half-width of the
    # repeats (12.706 · 0.212 / √2 = 1.906) around 0.9, cut at 0.
    iv = spread.around(0.9, [0.5, 0.8])
    assert iv.low == 0.0 and iv.high == pytest.approx(0.9 + 12.706205 * (0.3 / math.sqrt(2)) / math.sqrt(2))
    assert iv.method == "t_repeats" and iv.n == 2
    iv = spread.around(10.0, [9.0, 10.0, 11.0])
    assert (iv.low + iv.high) / 2 == pytest.approx(10.0) and iv.low > 0


def test_quantile_interval_is_the_order_statistics_of_the_binomial():
    # n = 100, the median: the textbook 95 % interval is x_(40) to x_(61) (1-based ranks).
    xs = [float(i) for i in range(100)]
    iv = spread.quantile_interval(list(reversed(xs)), 50)
    assert (iv.low, iv.high, iv.n, iv.method) == (39.0, 60.0, 100, "order_statistic")
    # Too few values to bracket the percentile at 95 %: none (p50 needs 6, p90 36, p99 368).
    for q, n in ((50, 6), (90, 36), (99, 368)):
        assert spread.quantile_interval([float(i) for i in range(n - 1)], q) is None
        iv = spread.quantile_interval([float(i) for i in range(n)], q)
        assert iv is not None and iv.high == n - 1  # the largest value bounds it
    with pytest.raises(ValueError):
        spread.quantile_interval(xs, 100)


def test_quantile_interval_holds_its_percentile_and_covers_the_true_one():
    import random

    from effbench.measure import formulas

    rng = random.Random(7)
    covered = 0
    trials = 2000
    for _ in range(trials):
        xs = [rng.random() for _ in range(rng.choice((40, 41, 60)))]  # uniform: the true p90 is 0.9
        iv = spread.quantile_interval(xs, 90)
        assert min(xs) <= iv.low <= formulas.percentile(xs, 90) <= iv.high <= max(xs)
        covered += iv.low <= 0.9 <= iv.high
    assert covered / trials >= 0.93  # ≥ 95 % by construction; 0.93 leaves room for 2000 draws


def test_hull_holds_both():
    a, b = spread.Interval(1.0, 2.0, 3, "x"), spread.Interval(0.5, 1.5, 40, "y")
    h = spread.hull(a, b, 3, "x+y")
    assert (h.low, h.high, h.n, h.method) == (0.5, 2.0, 3, "x+y")
