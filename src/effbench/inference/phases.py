"""Each request's time split into queue, prefill and decode, and the engine steps' log (pure
except :class:`StepLog`'s clock and energy reads).

Per request, three parts that sum to its client-side E2E (:mod:`.latency`):

- vLLM: prefill and decode are the engine's own per-request stats
  (``vllm.v1.metrics.stats.FinishedRequestStats``: ``prefill_time`` = first SCHEDULED to first
  token, ``decode_time`` = first token to last, engine-core timestamps); queue = E2E − prefill −
  decode: the wait in the engine's queue plus the client's side (from the scheduled arrival to
  the engine taking the request, and from the engine's last token to the client seeing it).
- transformers (static batches): prefill = the batch's prefill forward, from the batch's start
  to its first token; decode = first token to last; queue = batch start − submission (E2E less
  both, the same identity).

An engine step's tokens (:func:`step_tokens`): a request whose first token came in the step
counts its prompt tokens as the step's prefill tokens; every generated token after a request's
first counts as a decode token. :class:`StepLog` stamps each step with the clock and the energy
counter at its edges (``effbench.measure.phase_energy.Step``), for the prefill / decode energy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..measure.figure import Figure
from .latency import RequestTrace, _over_repeats

PARTS = ("queue", "prefill", "decode")
# Rounding between two clocks that should agree (client and engine core read the same monotonic
# clock): a queue this little below zero is zero, one further below is an error.
CLOCK_SLACK_S = 1e-3


def split(trace: RequestTrace) -> tuple[float, float, float] | None:
    """(queue, prefill, decode) seconds of one request, or None where the engine gave no split."""
    if trace.prefill_s is None or trace.decode_s is None or not trace.token_times:
        return None
    queue = trace.e2e() - trace.prefill_s - trace.decode_s
    if queue < -CLOCK_SLACK_S:
        raise ValueError(f"the engine's prefill {trace.prefill_s:.6f} s + decode {trace.decode_s:.6f} s "
                         f"exceed the request's E2E {trace.e2e():.6f} s")
    return max(queue, 0.0), trace.prefill_s, trace.decode_s


def set_from_batch(trace: RequestTrace, batch_start: float) -> None:
    """The transformers split: the batch's prefill forward started at ``batch_start``."""
    trace.prefill_s = trace.token_times[0] - batch_start
    trace.decode_s = trace.token_times[-1] - trace.token_times[0]


def phase_figures(repeats: Sequence[Sequence[RequestTrace]], source: str) -> dict[str, Figure]:
    """``queue_s_mean``, ``prefill_s_mean``, ``decode_s_mean`` over every request of every repeat,
    each with its t interval across the repeats (as the latency means); missing, with the count,
    where the engine split fewer than all requests."""
    each = [[split(t) for t in rep] for rep in repeats]
    lacking = sum(s is None for rep in each for s in rep)
    if lacking:
        total = sum(len(rep) for rep in each)
        why = f"the engine reported no prefill/decode split for {lacking} of {total} requests"
        return {f"{p}_s_mean": Figure.missing(why) for p in PARTS}
    out = {}
    for k, part in enumerate(PARTS):
        per = [[s[k] for s in rep] for rep in each]  # type: ignore[index]
        pooled = [v for rep in per for v in rep]
        out[f"{part}_s_mean"] = _over_repeats(sum(pooled) / len(pooled), [sum(r) / len(r) for r in per if r],
                                              source + "_phases")
    return out


def step_tokens(prior_tokens: int, new_tokens: int, prompt_tokens: int) -> tuple[int, int]:
    """(prefill tokens, decode tokens) one request adds to a step in which it produced
    ``new_tokens`` after ``prior_tokens``."""
    if new_tokens <= 0:
        return 0, 0
    if prior_tokens == 0:
        return prompt_tokens, new_tokens - 1
    return 0, new_tokens


class StepLog:
    """The engine steps of the measured repeats, each with its clock and energy-counter edges.

    ``energy``: a zero-argument reader of the counter's cumulative J (returning None where there
    is none), or None. Engines call :meth:`begin` before a step and :meth:`end` after it."""

    def __init__(self, energy: Callable[[], float | None] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.energy = energy
        self.clock = clock or time.monotonic
        self.steps: list[Any] = []

    def _read(self) -> float | None:
        return self.energy() if self.energy is not None else None

    def begin(self) -> tuple[float, float | None]:
        e = self._read()  # the counter first: the step's time then starts after the read
        return self.clock(), e

    def end(self, began: tuple[float, float | None], prefill_tokens: int, decode_tokens: int) -> None:
        from ..measure.phase_energy import Step

        t1 = self.clock()
        self.steps.append(Step(began[0], t1, began[1], self._read(), prefill_tokens, decode_tokens))

    @property
    def prefill_tokens(self) -> int:
        return sum(s.prefill_tokens for s in self.steps)

    @property
    def decode_tokens(self) -> int:
        return sum(s.decode_tokens for s in self.steps)


def energy_figures(log: StepLog, update_period_s: float | None, missing_reason: str | None,
                   counter_source: str | None = None) -> dict[str, Figure]:
    """Prefill and decode energy of the logged steps (``effbench.measure.phase_energy.attribute``)
    and each per token: prefill per prompt token, decode per generated token after the first."""
    from ..measure.phase_energy import RECORD_KEYS, attribute

    got = attribute(log.steps, update_period_s, missing_reason, counter_source or "energy_counter")
    out = {k: got[k] for k in RECORD_KEYS}
    for phase, tokens in (("prefill", log.prefill_tokens), ("decode", log.decode_tokens)):
        e = out[f"{phase}_energy_j"]
        out[f"{phase}_energy_j_per_token"] = (
            e.derive(lambda v, n=tokens: v / n, f"/{phase}_tokens") if tokens or not e.measured
            else Figure.missing(f"no {phase} tokens were logged"))
    return out


def energy_reader_of(mon: Any) -> Callable[[], float | None] | None:
    """The monitor's energy-counter reader (None where the monitor has none)."""
    return mon.energy_reader() if hasattr(mon, "energy_reader") else None


def monitor_energy_figures(log: StepLog, mon: Any) -> dict[str, Figure]:
    """:func:`energy_figures` with the monitor's counter period and missing reason, read after the
    steps (so a failure during them is named)."""
    why = getattr(mon, "energy_missing_reason", None)
    if not hasattr(mon, "energy_reader"):
        why = why or "the monitor has no energy counter reader"
    backend = getattr(mon, "backend", None)
    return energy_figures(log, getattr(mon, "energy_update_period_s", None), why,
                          getattr(backend, "energy_source", None))
