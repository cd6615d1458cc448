"""Training figures with batch-means intervals (measure/training.py), on a scripted clock and device."""

import pytest
from test_monitor import ScriptedClock, ScriptedGpu

from effbench.measure.monitor import Monitor
from effbench.measure.training import boundary_steps, step_groups, sub_window_count, training_figures


class ClockedGpu(ScriptedGpu):
    """A steady 100 W device on the scripted clock."""

    def __init__(self, clock):
        self.clock = clock

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
    assert al.interval is not None and al.interval.n == 8 and al.interval.method == "batch_means_k=8"
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
