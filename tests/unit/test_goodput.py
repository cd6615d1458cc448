"""Goodput and achieved request throughput (effbench.inference.goodput) on hand-made traces."""

from __future__ import annotations

import pytest

from effbench.inference.goodput import (NO_SLO, RepeatCounts, goodput_figures, is_good, limits, repeat_counts,
                                       repeat_origin)
from effbench.inference.latency import RequestTrace


def _tr(submitted: float, *times: float) -> RequestTrace:
    return RequestTrace(submitted, list(times), 8)


# One repeat from t = 10 s (its start, the arrival offsets' origin):
#  a: TTFT 0.2, TPOT (1.2 - 0.2) / 4 = 0.25          good under ttft 250 ms, tpot 300 ms
#  b: TTFT 0.4                                         too slow to start
#  c: TTFT 0.1, TPOT (2.1 - 0.1) / 2 = 1.0             too slow per token
#  d: one token, TTFT 0.25 (== limit: <=, as vLLM)     good (no TPOT: TTFT only)
REPEAT = [_tr(10.5, 10.7, 10.95, 11.2, 11.45, 11.7),
          _tr(11.0, 11.4, 11.5),
          _tr(11.5, 11.6, 12.6, 13.6),
          _tr(12.0, 12.25)]
SLO = {"ttft_ms": 250.0, "tpot_ms": 300.0}


def test_a_request_is_good_when_every_limit_holds():
    ttft, tpot = limits(SLO)
    assert [is_good(t, ttft, tpot) for t in REPEAT] == [True, False, False, True]
    # only the limits set are checked (vLLM: only the --goodput keys given)
    assert [is_good(t, *limits({"ttft_ms": 250.0})) for t in REPEAT] == [True, False, True, True]
    assert [is_good(t, *limits({"tpot_ms": 300.0})) for t in REPEAT] == [True, True, False, True]
    with pytest.raises(ValueError):
        limits({"e2el_ms": 1.0})


def test_one_repeat():
    c = repeat_counts(REPEAT, 10.0, SLO)
    assert c == RepeatCounts(4, 2, pytest.approx(3.6))  # from the start (10.0) to the last token (13.6)
    f = goodput_figures([c], "src")
    assert f["request_throughput_rps"].value == pytest.approx(4 / 3.6)
    assert f["goodput_rps"].value == pytest.approx(2 / 3.6)
    assert f["goodput_frac"].value == pytest.approx(0.5)
    assert f["goodput_rps"].interval is None  # one repeat: no interval


def test_without_an_slo_goodput_is_missing():
    c = repeat_counts(REPEAT, 10.0, None)
    assert c.good is None
    f = goodput_figures([c, c], "src")
    assert f["request_throughput_rps"].value == pytest.approx(4 / 3.6)
    assert f["goodput_rps"].missing_reason == NO_SLO and f["goodput_frac"].missing_reason == NO_SLO


def test_over_repeats_sums_then_divides():
    reps = [RepeatCounts(4, 2, 4.0), RepeatCounts(4, 4, 2.0), RepeatCounts(4, 3, 3.0)]
    f = goodput_figures(reps, "src")
    assert f["request_throughput_rps"].value == pytest.approx(12 / 9)
    assert f["goodput_rps"].value == pytest.approx(9 / 9)
    assert f["goodput_frac"].value == pytest.approx(9 / 12)
    for k in ("request_throughput_rps", "goodput_rps", "goodput_frac"):
        iv = f[k].interval
        assert iv is not None and iv.n == 3 and iv.low <= f[k].value <= iv.high and iv.low >= 0
    assert f["goodput_frac"].interval.high <= 1.0  # a fraction's interval is cut at 1


def test_a_request_without_tokens_or_a_bad_origin_is_an_error():
    with pytest.raises(ValueError):
        repeat_counts([RequestTrace(0.0, [])], 0.0, SLO)
    with pytest.raises(ValueError):
        repeat_counts(REPEAT, 14.0, SLO)


def test_a_repeats_origin():
    assert repeat_origin(REPEAT, [0.5, 1.0, 1.5, 2.0]) == 10.0  # open loop: the offsets' origin
    assert repeat_origin(REPEAT, None) == 10.5  # closed loop: the first submission
