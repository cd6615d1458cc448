"""Energy attributed to prefill and decode from the counter read at engine steps' edges."""

import threading

import pytest

from effbench.measure.monitor import Monitor
from effbench.measure.phase_energy import Step, attribute

PREFILL_W, DECODE_W, MIXED_W, GAP_W = 300.0, 150.0, 240.0, 50.0


class ScriptedCounter:
    """A cumulative energy counter (J) as a function of time: a known power over each span."""

    def __init__(self):
        self.spans: list[tuple[float, float, float]] = []  # (t0, t1, watts), in order, gaps at GAP_W

    def __call__(self, t: float) -> float:
        e, last = 0.0, 0.0
        for a, b, w in self.spans:
            if t <= a:
                break
            e += GAP_W * (a - last) + w * (min(t, b) - a)
            last = b
            if t <= b:
                return e
        return e + GAP_W * max(0.0, t - last)


def scripted_steps(kinds, step_s=0.02, gap_s=0.005):
    """Steps of the given kinds ((prefill tokens, decode tokens) each), back to back with a gap, their
    counter readings from the scripted counter; returns (steps, counter)."""
    counter = ScriptedCounter()
    t = 0.1
    for p, d in kinds:
        w = MIXED_W if p and d else PREFILL_W if p else DECODE_W
        counter.spans.append((t, t + step_s, w))
        t += step_s + gap_s
    steps = [Step(a, b, counter(a), counter(b), p, d) for (a, b, _), (p, d) in zip(counter.spans, kinds)]
    return steps, counter


def test_pure_steps_get_the_exact_integral_of_their_power():
    kinds = [(512, 0)] * 3 + [(0, 8)] * 20 + [(256, 0)] + [(0, 8)] * 10
    steps, counter = scripted_steps(kinds)
    figs = attribute(steps, update_period_s=0.001, missing_reason=None, counter_source="scripted_counter")
    assert figs["prefill_energy_j"].value == pytest.approx(PREFILL_W * 0.02 * 4)
    assert figs["decode_energy_j"].value == pytest.approx(DECODE_W * 0.02 * 30)
    assert figs["mixed_step_energy_frac"].value == 0.0
    assert figs["prefill_energy_j"].source.startswith("scripted_counter/engine_steps(mixed_split=tokens")
    # The gaps between steps are not attributed: their share of the counter's advance is reported.
    span = counter(steps[-1].t1) - counter(steps[0].t0)
    gaps = GAP_W * 0.005 * (len(steps) - 1)
    assert figs["unattributed_energy_frac"].value == pytest.approx(gaps / span)
    assert figs["prefill_energy_j"].value + figs["decode_energy_j"].value == pytest.approx(span - gaps)


def test_a_mixed_step_is_split_by_its_tokens():
    steps, _ = scripted_steps([(100, 0), (30, 10), (0, 16)])
    figs = attribute(steps, None, None)
    mixed = MIXED_W * 0.02
    assert figs["prefill_energy_j"].value == pytest.approx(PREFILL_W * 0.02 + mixed * 30 / 40)
    assert figs["decode_energy_j"].value == pytest.approx(DECODE_W * 0.02 + mixed * 10 / 40)
    total = PREFILL_W * 0.02 + mixed + DECODE_W * 0.02
    assert figs["mixed_step_energy_frac"].value == pytest.approx(mixed / total)
    assert f"mixed_energy_frac={mixed / total:.3f}" in figs["decode_energy_j"].source


def test_a_step_without_tokens_goes_to_neither():
    steps, _ = scripted_steps([(100, 0), (0, 0), (0, 4)])
    figs = attribute(steps, None, None)
    assert figs["prefill_energy_j"].value == pytest.approx(PREFILL_W * 0.02)
    assert figs["decode_energy_j"].value == pytest.approx(DECODE_W * 0.02)


def test_a_counter_coarser_than_the_steps_leaves_both_missing_naming_both_numbers():
    steps, _ = scripted_steps([(64, 0)] + [(0, 4)] * 9, step_s=0.012)
    figs = attribute(steps, update_period_s=1 / 12, missing_reason=None)
    reason = "counter updates every 83 ms, engine steps take 12 ms (median): too coarse to attribute per step"
    for k in ("prefill_energy_j", "decode_energy_j"):
        assert figs[k].value is None and figs[k].missing_reason == reason


def test_no_counter_leaves_both_missing_with_the_monitors_reason():
    steps = [Step(0.0, 0.02, None, None, 64, 0), Step(0.03, 0.05, None, None, 0, 4)]
    why = "no energy counter on this host (no NVML GPU; no readable RAPL package counters under /sys/class/powercap)"
    figs = attribute(steps, None, why)
    assert figs["prefill_energy_j"].missing_reason == why and figs["decode_energy_j"].missing_reason == why
    assert attribute([], None, why)["prefill_energy_j"].missing_reason == "no engine steps were recorded"


# -- the monitor's side: the counter read from the serving loop -------------------------------------

class Clock:
    t = 0.0

    def __call__(self):
        return self.t


class CounterGpu:
    """The hardware boundary: a backend whose energy counter is the scripted counter on a scripted clock."""

    name, mem_source, util_source, energy_source, energy_update_hz = "scripted", "m", "u", "scripted_counter", 1000.0

    def __init__(self, clock, counter, fails_at=None):
        self.clock, self.counter, self.fails_at = clock, counter, fails_at

    def read(self):
        return []

    def energy_j(self):
        if self.fails_at is not None and self.clock.t >= self.fails_at:
            raise RuntimeError("GPU is lost")
        return self.counter(self.clock.t)

    def describe(self):
        return {}

    def close(self):
        pass


def serve(mon, clock, steps):
    """A serving loop: reads the counter at each step's edges (from its own thread, as vLLM's loop would)."""
    read = mon.energy_reader()
    out = []

    def loop():
        for s in steps:
            clock.t = s.t0
            e0 = read()
            clock.t = s.t1
            out.append(Step(s.t0, s.t1, e0, read(), s.prefill_tokens, s.decode_tokens))

    th = threading.Thread(target=loop)
    th.start()
    th.join()
    return out


def test_monitor_energy_reader_gives_the_steps_their_counter_readings():
    script, counter = scripted_steps([(128, 0)] + [(0, 8)] * 5)
    clock = Clock()
    mon = Monitor(backend=CounterGpu(clock, counter), interval_s=1.0, clock=clock)
    assert mon.energy_update_period_s == pytest.approx(0.001) and mon.energy_missing_reason is None
    steps = serve(mon, clock, script)
    figs = attribute(steps, mon.energy_update_period_s, mon.energy_missing_reason, mon.backend.energy_source)
    assert figs["prefill_energy_j"].value == pytest.approx(PREFILL_W * 0.02)
    assert figs["decode_energy_j"].value == pytest.approx(DECODE_W * 0.02 * 5)


def test_monitor_energy_reader_after_a_failure_returns_none_and_names_it():
    script, counter = scripted_steps([(128, 0)] + [(0, 8)] * 5)
    clock = Clock()
    mon = Monitor(backend=CounterGpu(clock, counter, fails_at=script[3].t0), interval_s=1.0, clock=clock)
    steps = serve(mon, clock, script)
    assert steps[2].e1 is not None and steps[3].e0 is None and steps[-1].e1 is None
    why = mon.energy_missing_reason
    assert why is not None and "scripted energy counter failed" in why and "GPU is lost" in why
    assert mon.energy_failure is not None  # the windows ending after it lose their energy too
    figs = attribute(steps, mon.energy_update_period_s, why)
    assert figs["prefill_energy_j"].value is None and figs["decode_energy_j"].missing_reason == why


def test_monitor_without_a_counter():
    class NoCounter(CounterGpu):
        energy_source, energy_update_hz, energy_missing_reason = None, None, "no energy counter on this host (test)"

        def energy_j(self):
            return None

    clock = Clock()
    mon = Monitor(backend=NoCounter(clock, None), interval_s=1.0, clock=clock)
    assert mon.energy_reader()() is None and mon.energy_update_period_s is None
    assert mon.energy_missing_reason == "no energy counter on this host (test)"
