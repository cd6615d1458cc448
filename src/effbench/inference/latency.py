"""Per-request latency from a client-side trace, and its statistics (pure functions).

A request's trace is its submission time and the time the client saw each generated token
(vLLM: the engine step that returned it; transformers: the decode step that produced it),
the way vLLM's serving benchmark and MLPerf time streamed responses:

- TTFT  = first token time - submission time
- E2E   = last token time - submission time
- TPOT  = (E2E - TTFT) / (tokens - 1)            one value per request, first token excluded
- ITL   = gaps between consecutive token times    pooled over all requests' tokens

Submission time: closed loop, when the client handed the request to the engine; open loop
(:mod:`.arrivals`), the request's scheduled arrival, so waiting behind a running engine step (or
for a free slot under the concurrency cap) counts, as it would in front of a real server.

Decode time is never derived as "generate minus prefill". Statistics are mean and the
linear-interpolation p50 / p90 / p99 of :func:`effbench.measure.formulas.percentile`.

Intervals (two or more repeats; each repeat is an independent replicate of the load point):
every statistic is over the pooled requests of all repeats, and its interval is centred on it
with the t half-width of the same statistic across the repeats, cut at 0 (latencies are not
negative). A percentile's interval also holds the distribution-free order-statistic interval of
the pooled values where there are enough of them (:func:`effbench.measure.spread.quantile_interval`;
p99 needs 368): method ``order_statistic+t_repeats``.

Counts: a percentile is reported only where the values it is taken over (requests, for TTFT, TPOT
and E2E; token gaps, for ITL; pooled over the repeats) number at least
:func:`effbench.measure.spread.requests_for_percentile` (5 beyond it: p50 10, p90 50, p99 500).
Below that the figure is missing with a reason naming the count it had and the count it needs
(docs/noise.md); the means are always reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..measure import formulas, spread
from ..measure.figure import Figure

STATS = ("mean", "p50", "p90", "p99")
METRICS = ("ttft", "tpot", "itl", "e2e")


@dataclass
class RequestTrace:
    submitted: float  # monotonic seconds
    token_times: list[float] = field(default_factory=list)  # one per generated token, ascending
    prompt_tokens: int = 0
    # The engine's own split of the request (:mod:`.phases`): seconds from its scheduling to its
    # first token, and from its first token to its last; None where the engine did not report it.
    prefill_s: float | None = None
    decode_s: float | None = None

    @property
    def tokens(self) -> int:
        return len(self.token_times)

    def ttft(self) -> float:
        return self.token_times[0] - self.submitted

    def e2e(self) -> float:
        return self.token_times[-1] - self.submitted

    def tpot(self) -> float | None:
        """Mean time per output token after the first; None for a one-token response."""
        if self.tokens < 2:
            return None
        return (self.e2e() - self.ttft()) / (self.tokens - 1)

    def itls(self) -> list[float]:
        t = self.token_times
        return [t[i] - t[i - 1] for i in range(1, len(t))]


def stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": sum(values) / len(values),
        "p50": formulas.percentile(values, 50),
        "p90": formulas.percentile(values, 90),
        "p99": formulas.percentile(values, 99),
    }


def per_request(traces: Sequence[RequestTrace]) -> dict[str, list[float]]:
    """TTFT, TPOT, E2E per request and ITL per token gap, pooled."""
    bad = [i for i, t in enumerate(traces) if not t.token_times]
    if bad:
        raise ValueError(f"requests {bad[:5]} produced no tokens")
    return {
        "ttft": [t.ttft() for t in traces],
        "tpot": [v for t in traces if (v := t.tpot()) is not None],
        "itl": [g for t in traces for g in t.itls()],
        "e2e": [t.e2e() for t in traces],
    }


def _over_repeats(pooled: float, per_repeat: Sequence[float], source: str,
                  values: Sequence[float] = (), q: float | None = None) -> Figure:
    """The pooled statistic with a t interval from its spread across the repeats (each repeat is an
    independent replicate of the whole load point), centred on it and cut at 0; one repeat: no
    interval. A percentile (``q``, of the pooled ``values``) takes the hull with the order-statistic
    interval of the pooled values where one exists."""
    if len(per_repeat) < 2:
        return Figure.of(pooled, source)
    iv = spread.around(pooled, per_repeat, "t_repeats")
    if q is not None:
        os_iv = spread.quantile_interval(values, q)
        if os_iv is not None:
            iv = spread.hull(iv, os_iv, len(per_repeat), "order_statistic+t_repeats")
    return Figure.of(pooled, source, iv)


def _too_few(st: str, unit: str, counts: Sequence[int], tail: int) -> str | None:
    """Why the ``st`` percentile (e.g. "p90") of values pooled from repeats of ``counts`` values is
    not reported, or None where there are enough (:func:`spread.requests_for_percentile`)."""
    need, had = spread.requests_for_percentile(float(st[1:]), tail), sum(counts)
    if had >= need:
        return None
    r = len(counts)
    each = ("one repeat" if r == 1 else f"{counts[0]} a repeat × {r} repeats" if len(set(counts)) == 1
            else f"over {r} repeats")
    return f"{st} needs {need} {unit} ({tail} beyond it, docs/noise.md), had {had} ({each})"


def latency_figures(repeats: Sequence[Sequence[RequestTrace]], source: str,
                    tail: int = spread.PERCENTILE_TAIL) -> dict[str, Figure]:
    """``<metric>_s_<stat>`` figures for TTFT, TPOT, ITL and E2E over every request of every
    repeat, plus AL (s/request), each with its interval across the repeats. A percentile from fewer
    pooled values than leave ``tail`` of them beyond it is missing, with the counts as its reason
    (``tail=0`` reports every percentile)."""
    pooled = per_request([t for rep in repeats for t in rep])
    each = [per_request(rep) for rep in repeats]
    out: dict[str, Figure] = {}
    for metric in METRICS:
        vs = pooled[metric]
        unit = "token gaps" if metric == "itl" else "requests"
        for st in STATS:
            key = f"{metric}_s_{st}"
            if not vs:
                out[key] = Figure.missing(f"every response was one token long: no {metric.upper()}")
                continue
            if st != "mean" and (why := _too_few(st, unit, [len(e[metric]) for e in each], tail)):
                out[key] = Figure.missing(why)
                continue
            out[key] = _over_repeats(stats(vs)[st], [stats(e[metric])[st] for e in each if e[metric]], source,
                                     vs, None if st == "mean" else float(st[1:]))
    e2e = [formulas.average_latency(e["e2e"]) for e in each]
    out["al_s_per_request"] = _over_repeats(formulas.average_latency(pooled["e2e"]), e2e, source + "_e2e_mean")
    return out


def throughput_figures(repeat_tokens: Sequence[int], repeat_seconds: Sequence[float], source: str) -> dict[str, Figure]:
    """IT = Σ generated tokens / Σ time over the repeats (with the ratio estimator's interval across
    them), and its CV across repeats."""
    per = [n / s for n, s in zip(repeat_tokens, repeat_seconds)]
    cv = (Figure.of(formulas.coefficient_of_variation(per), source + "_per_repeat") if len(per) > 1
          else Figure.missing("one repeat: no spread"))
    it = Figure.rate([float(n) for n in repeat_tokens], list(repeat_seconds), source, "t_repeats")
    return {"it_tokens_per_s": it, "tokens_per_s": it, "it_cv": cv}
