"""Every formula against a trace computed by hand."""

import math

import pytest

from effbench.measure import formulas as f

# A hand-made memory trace: 2 GB for 1 s, ramping to 4 GB over the next 2 s.
TS = [0.0, 1.0, 3.0]
MEM = [2e9, 2e9, 4e9]


def test_integrate_trapezoid_by_hand():
    # 2 GB·s over [0, 1] + (2+4)/2 · 2 = 6 GB·s over [1, 3]  -> 8e9 B·s
    assert f.integrate(TS, MEM, 0.0, 3.0) == pytest.approx(8e9)


def test_window_edges_interpolated():
    # window [0.5, 2.0]: 2e9·0.5 + (2e9 + 3e9)/2 · 1.0 = 1e9 + 2.5e9 = 3.5e9 over 1.5 s
    assert f.time_average(TS, MEM, 0.5, 2.0) == pytest.approx(3.5e9 / 1.5)


# A triangle: 0 at t = 0, up to 4 at t = 2, down to 0 at t = 4. The window [0.5, 3.0] starts on
# the rising ramp and ends on the falling one, with one sample (t = 2) inside.
TRI_TS = [0.0, 2.0, 4.0]
TRI = [0.0, 4.0, 0.0]
# By hand: v(0.5) = 1, v(2) = 4, v(3) = 2 (linear between samples), so
#   ∫ = 1.5 · (1 + 4) / 2 + 1.0 · (4 + 2) / 2 = 3.75 + 3.0 = 6.75 over 2.5 s = 2.7 on average.
# Taking the nearest sample at each edge instead (0 for t = 0.5; 4 or 0 for t = 3, a tie) gives 7 or 5;
# holding the previous sample (0, 4) gives 7 too; the next one (4, 0), 8.


def test_window_edges_inside_ramps_are_interpolated():
    assert f.integrate(TRI_TS, TRI, 0.5, 3.0) == pytest.approx(6.75)
    assert f.time_average(TRI_TS, TRI, 0.5, 3.0) == pytest.approx(2.7)
    assert f.amu_gb(TRI_TS, [v * 1e9 for v in TRI], 0.5, 3.0) == pytest.approx(2.7)
    assert f.amu_fraction(TRI_TS, [v * 1e9 for v in TRI], 8e9, 0.5, 3.0) == pytest.approx(2.7 / 8)
    assert f.pcu(TRI_TS, [25 * v for v in TRI], 0.5, 3.0) == pytest.approx(0.675)  # 0-100 %: 67.5 %
    assert f.energy_from_power(TRI_TS, [100 * v for v in TRI], 0.5, 3.0) == pytest.approx(675.0)  # J
    # Both edges inside one ramp, no sample inside the window: [2.5, 3.5] on the falling side,
    # v = 3 → 1, ∫ = 1 · (3 + 1) / 2 = 2.
    assert f.integrate(TRI_TS, TRI, 2.5, 3.5) == pytest.approx(2.0)
    assert f.time_average(TRI_TS, TRI, 2.5, 3.5) == pytest.approx(2.0)
    # Unsorted samples are the same series.
    assert f.time_average([4.0, 0.0, 2.0], [0.0, 0.0, 4.0], 0.5, 3.0) == pytest.approx(2.7)


def test_amu_gb_and_fraction():
    assert f.amu_gb(TS, MEM, 0.0, 3.0) == pytest.approx(8 / 3)
    assert f.amu_fraction(TS, MEM, 8e9, 0.0, 3.0) == pytest.approx(8 / 3 / 8)


def test_window_outside_samples_holds_edge_values():
    assert f.time_average([1.0], [5.0], 0.0, 2.0) == pytest.approx(5.0)


def test_pcu_time_average_of_utilisation():
    # 100 % for 1 s, then a linear ramp down to 0 % over 1 s:
    # ∫ = 100·1 + (100+0)/2·1 = 150 %·s over 2 s = 75 % -> 0.75
    assert f.pcu([0, 1, 2], [100, 100, 0], 0, 2) == pytest.approx(0.75)


def test_latency_throughputs_and_energy():
    assert f.average_latency([0.1, 0.2, 0.3]) == pytest.approx(0.2)
    assert f.token_throughput(1_000_000, 2_000_000, 10.0) == pytest.approx(0.05)
    assert f.sample_throughput(64, 1_000, 8.0) == pytest.approx(0.008)
    assert f.inference_throughput(1280, 6.4) == pytest.approx(200.0)
    assert f.average_power_w(3000.0, 10.0) == pytest.approx(300.0)
    assert f.energy_from_power([0, 1, 2], [100, 300, 300], 0, 2) == pytest.approx(200 + 300)


def test_mfu():
    # 6e9 FLOP/token · 1e4 tokens in 1 s = 6e13 FLOP/s over a 1e15 peak = 6 %
    assert f.mfu(6e9, 1e4, 1.0, 1e15) == pytest.approx(0.06)


def test_mcr_matches_the_papers_check():
    # DeepSeek-R1-Distill-Qwen-14B int4: 4 × 0.4361 / 0.4719 = 3.6965
    assert f.mcr(16, 4, 0.4361, 0.4719) == pytest.approx(3.6965, abs=5e-5)


def test_perplexity_percentile_cv():
    assert f.perplexity(math.log(7.0)) == pytest.approx(7.0)
    xs = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert f.percentile(xs, 50) == 3.0
    assert f.percentile(xs, 90) == pytest.approx(4.0 + 0.6 * 6.0)  # numpy's linear rule
    assert f.percentile(xs, 100) == 10.0
    assert f.coefficient_of_variation([2.0, 4.0]) == pytest.approx(math.sqrt(2) / 3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: f.time_average([], [], 0, 1),
        lambda: f.time_average([0, 1], [1], 0, 1),
        lambda: f.time_average([0, 1], [1, 1], 1, 1),
        lambda: f.token_throughput(1, 0, 1),
        lambda: f.average_power_w(1, 0),
        lambda: f.average_latency([]),
        lambda: f.amu_fraction([0], [1], 0, 0, 1),
    ],
)
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()
