"""Each request's queue / prefill / decode split, step token counts and the step log
(effbench.inference.phases) on hand traces."""

from __future__ import annotations

import pytest

from effbench.inference.latency import RequestTrace
from effbench.inference.phases import (StepLog, energy_figures, phase_figures, set_from_batch, split,
                                       step_tokens)


def test_engine_split_sums_to_e2e():
    # submitted (scheduled arrival) at 1.0; tokens at 1.5, 1.6, 1.7; the engine: prefill 0.3 (scheduled
    # to first token), decode 0.19 (first token to last, engine clock); the rest is queue
    tr = RequestTrace(1.0, [1.5, 1.6, 1.7], 4, prefill_s=0.3, decode_s=0.19)
    q, p, d = split(tr)
    assert (p, d) == (0.3, 0.19) and q == pytest.approx(0.7 - 0.3 - 0.19)
    assert q + p + d == pytest.approx(tr.e2e())
    assert split(RequestTrace(1.0, [1.5], 4)) is None  # no engine split


def test_clock_slack_and_impossible_splits():
    assert split(RequestTrace(0.0, [0.5, 1.0], 4, prefill_s=0.5, decode_s=0.5004))[0] == 0.0  # rounding
    with pytest.raises(ValueError):
        split(RequestTrace(0.0, [0.5, 1.0], 4, prefill_s=0.6, decode_s=0.5))


def test_batch_split():
    # a static batch started at 2.0 for a request that arrived at 1.25: queue 0.75, prefill 0.25
    tr = RequestTrace(1.25, [2.25, 2.5, 2.75], 4)
    set_from_batch(tr, 2.0)
    assert split(tr) == pytest.approx((0.75, 0.25, 0.5))


def test_phase_figures_pool_the_requests_with_an_interval_across_repeats():
    reps = [[RequestTrace(0.0, [1.0, 2.0], 4, 0.5, 1.0), RequestTrace(0.0, [2.0, 3.0], 4, 1.0, 1.0)],
            [RequestTrace(0.0, [1.0, 3.0], 4, 0.5, 2.0)]]
    f = phase_figures(reps, "src")
    assert f["queue_s_mean"].value == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert f["prefill_s_mean"].value == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert f["decode_s_mean"].value == pytest.approx((1.0 + 1.0 + 2.0) / 3)
    assert f["decode_s_mean"].interval.n == 2
    reps[1].append(RequestTrace(0.0, [1.0], 4))  # one request the engine did not split
    f = phase_figures(reps, "src")
    assert all(not v.measured and "1 of 4 requests" in v.missing_reason for v in f.values())


def test_step_tokens():
    assert step_tokens(0, 1, 64) == (64, 0)  # its first token: its prompt was prefilled
    assert step_tokens(3, 1, 64) == (0, 1)  # a decode token
    assert step_tokens(0, 0, 64) == (0, 0)  # a chunk of prefill without a token yet counts later
    assert step_tokens(0, 3, 64) == (64, 2)  # several tokens at once: all but the first are decode


def test_step_log_and_energy():
    clock = iter([0.0, 0.1, 0.1, 0.3, 0.3, 0.5]).__next__
    joules = iter([100.0, 101.0, 101.0, 104.0, 104.0, 105.0]).__next__
    log = StepLog(joules, clock)
    for pf, dc in ((64, 0), (64, 1), (0, 2)):
        log.end(log.begin(), pf, dc)
    assert [(s.t0, s.t1, s.e0, s.e1) for s in log.steps] == [(0.0, 0.1, 100.0, 101.0), (0.1, 0.3, 101.0, 104.0),
                                                            (0.3, 0.5, 104.0, 105.0)]
    assert (log.prefill_tokens, log.decode_tokens) == (128, 3)
    f = energy_figures(log, None, None)
    # mixed step 2 (64 prefill, 1 decode tokens) splits its 3 J by tokens
    assert f["prefill_energy_j"].value == pytest.approx(1 + 3 * 64 / 65)
    assert f["decode_energy_j"].value == pytest.approx(3 / 65 + 1)
    assert f["prefill_energy_j_per_token"].value == pytest.approx((1 + 3 * 64 / 65) / 128)
    assert f["decode_energy_j_per_token"].value == pytest.approx((3 / 65 + 1) / 3)


def test_no_counter_leaves_energy_missing():
    log = StepLog(None)
    log.end(log.begin(), 8, 0)
    f = energy_figures(log, None, "no energy counter on this host")
    assert set(f) == {"prefill_energy_j", "decode_energy_j", "prefill_energy_j_per_token", "decode_energy_j_per_token"}
    assert all(v.missing_reason == "no energy counter on this host" for v in f.values())
