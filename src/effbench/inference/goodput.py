"""Achieved request throughput and goodput of a served load point under its SLOs (pure).

Goodput as ``vllm bench serve --goodput ttft:X tpot:Y`` counts it (DistServe's definition,
``vllm/benchmarks/serve.py`` ``calculate_metrics``): a completed request is good when each
configured limit holds, TTFT <= ``ttft_ms`` and TPOT <= ``tpot_ms`` (<=, as vLLM's
``slo >= value``); a one-token response has no TPOT and vLLM counts its TPOT as 0, so only
its TTFT is checked. A limit the load point does not set is not checked (vLLM: only the given
keys); with no ``slo`` at all goodput is missing with that reason.

Where it differs from vLLM's: TTFT (and E2E) run from the request's *scheduled* arrival, not
from when the client got round to sending it (vLLM's asyncio client stamps the send, so client
lag there is not counted); requests are fixed-length and never fail (a request that produced
no token is an error here; vLLM leaves failed requests out of "completed"); no ``e2el`` limit.

Per repeat, over its span — from the repeat's start (the origin of its arrival offsets, which
vLLM's ``benchmark_duration`` also starts at; closed loop: its first submission) to its last
token (:func:`repeat_origin`):

- request_throughput = completed / span     (vLLM's ``request_throughput``)
- goodput_rps        = good / span          (vLLM's ``request_goodput``)
- goodput_frac       = good / completed

Across repeats each is Σ over repeats / Σ over repeats with the ratio estimator's t interval
(:meth:`Figure.rate`, as IT), so a repeat weighs by its span (its requests for the fraction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..measure.figure import Figure
from ..measure.spread import Interval
from .latency import RequestTrace

NO_SLO = "the load point sets no SLO (slo: ttft_ms, tpot_ms)"


@dataclass(frozen=True)
class RepeatCounts:
    completed: int
    good: int | None  # None without an SLO
    span_s: float


def limits(slo: Mapping[str, float] | None) -> tuple[float | None, float | None]:
    """(TTFT limit, TPOT limit) in seconds; None where the load point sets none."""
    slo = slo or {}
    unknown = set(slo) - {"ttft_ms", "tpot_ms"}
    if unknown:
        raise ValueError(f"unknown SLO keys {sorted(unknown)}: ttft_ms, tpot_ms")
    return tuple(None if slo.get(k) is None else float(slo[k]) / 1000 for k in ("ttft_ms", "tpot_ms"))  # type: ignore[return-value]


def is_good(trace: RequestTrace, ttft_s: float | None, tpot_s: float | None) -> bool:
    """Whether a completed request met every limit set (a one-token response: TTFT only)."""
    if ttft_s is not None and trace.ttft() > ttft_s:
        return False
    tpot = trace.tpot()
    return tpot_s is None or tpot is None or tpot <= tpot_s


def repeat_origin(traces: Sequence[RequestTrace], offsets: Sequence[float] | None) -> float:
    """A repeat's start: the origin of its arrival offsets (open loop: a request's scheduled
    arrival less its offset), else its first submission (closed loop)."""
    if offsets:
        return traces[0].submitted - offsets[0]
    return min(t.submitted for t in traces)


def repeat_counts(traces: Sequence[RequestTrace], origin: float, slo: Mapping[str, float] | None) -> RepeatCounts:
    """Completed and good requests of one repeat, and its span from ``origin`` to its last token."""
    bad = [i for i, t in enumerate(traces) if not t.token_times]
    if bad:
        raise ValueError(f"requests {bad[:5]} produced no tokens")
    span = max(t.token_times[-1] for t in traces) - origin
    if not span > 0:
        raise ValueError(f"the repeat's span is {span} s: its origin must precede its last token")
    good = None
    if slo:
        ttft_s, tpot_s = limits(slo)
        good = sum(is_good(t, ttft_s, tpot_s) for t in traces)
    return RepeatCounts(len(traces), good, span)


def _capped(f: Figure, hi: float) -> Figure:
    """A fraction's interval cut at ``hi`` (it cannot exceed it), as intervals are cut at 0."""
    iv = f.interval
    if iv is None or iv.high <= hi:
        return f
    return f.with_interval(Interval(iv.low, max(hi, f.value or 0.0), iv.n, iv.method))


def goodput_figures(repeats: Sequence[RepeatCounts], source: str) -> dict[str, Figure]:
    """``request_throughput_rps``, ``goodput_rps`` and ``goodput_frac`` over the repeats."""
    spans = [r.span_s for r in repeats]
    out = {"request_throughput_rps": Figure.rate([float(r.completed) for r in repeats], spans,
                                                 source + "_completed/span", "t_repeats")}
    if any(r.good is None for r in repeats):
        out["goodput_rps"] = out["goodput_frac"] = Figure.missing(NO_SLO)
        return out
    good = [float(r.good) for r in repeats]  # type: ignore[arg-type]
    out["goodput_rps"] = Figure.rate(good, spans, source + "_good/span", "t_repeats")
    out["goodput_frac"] = _capped(Figure.rate(good, [float(r.completed) for r in repeats],
                                              source + "_good/completed", "t_repeats"), 1.0)
    return out
