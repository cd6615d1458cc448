"""Training figures with ratio batch-means intervals (measure/training.py), on a scripted clock and device."""

import math
import re
from pathlib import Path

import pytest
from test_monitor import ScriptedClock, ScriptedGpu

from effbench.measure.monitor import Monitor
from effbench.measure.training import boundary_steps, step_groups, sub_window_count, training_figures

NOISE_DOC = Path(__file__).resolve().parents[2] / "docs" / "noise.md"


class ClockedGpu(ScriptedGpu):
    """A steady 100 W device on the scripted clock."""

    def __init__(self, clock):
        super().__init__(clock)  # its read() counts reads: without the counter every read failed

    def energy_j(self):
        return 100.0 * self.clock.t


def run_loop(step_times, tokens_per_step):
    """The training loops' protocol: open after warm-up, mark at the boundaries, close."""
    clock = ScriptedClock()
    mon = Monitor(backend=ClockedGpu(clock), interval_s=1.0, clock=clock)
    marks = boundary_steps(len(step_times))
    mon.begin_window("train")
    for i, dt in enumerate(step_times):
        clock.t += dt
        if i in marks:
            mon.mark()
    window = mon.end_window("train")
    return training_figures(window, step_times, [tokens_per_step] * len(step_times), 1000.0,
                            unit="token", per_param_key="tt_tokens_per_param_s")


def test_groups_and_boundaries_cut_the_window_like_sub_windows():
    assert sub_window_count(1) == 0 and sub_window_count(5) == 5 and sub_window_count(100) == 8
    groups = step_groups(20, 8)
    assert {len(g) for g in groups} == {2, 3} and groups[0].start == 0 and groups[-1].stop == 20
    assert all(a.stop == b.start for a, b in zip(groups, groups[1:]))
    assert boundary_steps(20) == {g.stop - 1 for g in groups[:-1]} and len(boundary_steps(20)) == 7
    assert boundary_steps(1) == set()


def test_figures_are_exact_totals_with_intervals_over_the_sub_windows():
    times = [0.10, 0.12, 0.09, 0.11, 0.10, 0.13, 0.10, 0.08, 0.12, 0.10, 0.11, 0.09, 0.10, 0.12, 0.10, 0.11]
    fig = run_loop(times, tokens_per_step=512)
    busy, n = sum(times), len(times)
    al = fig["al_s_per_iter"]
    assert al.value == pytest.approx(busy / n)
    assert al.interval is not None and al.interval.n == 8 and al.interval.method == "ratio_batch_means_k=8"
    assert al.interval.low < al.value < al.interval.high
    assert fig["tokens_per_s"].value == pytest.approx(512 * n / busy)
    assert fig["tt_tokens_per_param_s"].value == pytest.approx(512 * n / busy / 1000.0)
    assert fig["tokens_per_s"].interval.low < fig["tokens_per_s"].value < fig["tokens_per_s"].interval.high
    # A steady 100 W: AEC is exact and its interval collapses; energy and J/token follow the window.
    assert fig["aec_w"].value == pytest.approx(100.0)
    assert fig["aec_w"].interval.high - fig["aec_w"].interval.low == pytest.approx(0.0, abs=1e-6)
    assert fig["energy_j_per_token"].value == pytest.approx(100.0 * busy / (512 * n))
    assert fig["energy_j_per_token"].interval is not None
    assert fig["energy_window_short"] is False or fig["energy_window_short"] is None


def test_a_single_step_has_no_interval_and_constant_steps_a_zero_width_one():
    one = run_loop([0.2], tokens_per_step=64)
    assert one["al_s_per_iter"].value == pytest.approx(0.2) and one["al_s_per_iter"].interval is None
    flat = run_loop([0.1] * 8, tokens_per_step=64)
    iv = flat["al_s_per_iter"].interval
    assert iv.n == 8 and iv.high - iv.low == pytest.approx(0.0, abs=1e-9)


def test_al_at_18_steps_is_the_documented_ratio_estimator_over_unequal_groups():
    # Issue #19 item 9: 18 steps do not divide into 8 equal batches. docs/noise.md: the window is cut
    # at round(i·n/k), i = 0..k (here 0 2 4 7 9 11 14 16 18: groups of 2 2 3 2 2 3 2 2 steps, none
    # dropped); with x_i the group's summed step time and y_i its steps, AL = R = Σx / Σy and
    # SE = sqrt(Σ (x_i − R·y_i)² / (k (k − 1))) / (Σy / k), 95 % interval R ± t(0.975, k − 1)·SE.
    times = [0.30, 0.10, 0.12, 0.09, 0.20, 0.11, 0.10, 0.13, 0.10,
             0.08, 0.12, 0.10, 0.11, 0.09, 0.10, 0.25, 0.10, 0.11]
    sizes = [2, 2, 3, 2, 2, 3, 2, 2]
    cuts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    x = [sum(times[a:b]) for a, b in zip(cuts, cuts[1:])]
    k, r = 8, sum(times) / 18
    se = math.sqrt(sum((xi - r * yi) ** 2 for xi, yi in zip(x, sizes)) / (k * (k - 1))) / (18 / k)
    t7 = 2.364624252  # Student's t, 0.975 quantile, 7 df
    fig = run_loop(times, tokens_per_step=64)
    al = fig["al_s_per_iter"]
    assert [len(g) for g in step_groups(18, 8)] == sizes
    assert al.value == pytest.approx(r)
    assert al.interval.method == "ratio_batch_means_k=8" and al.interval.n == 8
    assert al.interval.low == pytest.approx(r - t7 * se, rel=1e-6)
    assert al.interval.high == pytest.approx(r + t7 * se, rel=1e-6)
    # Every interval over these sub-windows carries the same label (rates and the monitor's figures).
    for key in ("tokens_per_s", "tt_tokens_per_param_s", "amu_gb", "aec_w", "energy_j"):
        iv = fig[key].interval
        assert iv is None or iv.method == "ratio_batch_means_k=8", key
    # ... and docs/noise.md names that label and the estimator for training AL.
    doc = NOISE_DOC.read_text()
    al_row = next(line for line in doc.splitlines() if line.startswith("| training AL"))
    assert "ratio_batch_means_k=<k>" in al_row and "round(i·n/k)" in doc
    assert re.search(r"sqrt\(Σ \(x_i − R·y_i\)² / \(k \(k − 1\)\)\) / \(Σy / k\)", doc)
