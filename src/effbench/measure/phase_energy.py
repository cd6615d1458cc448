"""Energy attributed to prefill and decode from the energy counter read at engine steps' edges (pure).

The serving loop reads the counter (:meth:`Monitor.energy_reader`) before and after each engine
step and counts the tokens the step scheduled of each kind; :func:`attribute` turns those steps
into the record's ``prefill_energy_j`` and ``decode_energy_j``.

Method.

* A step's energy is the counter's difference across it, ``e1 − e0``.
* A pure prefill step (prefill tokens only) counts to prefill, a pure decode step to decode.
* A mixed step (both kinds: vLLM V1 schedules chunked prefills and decodes in one batch) is
  split in proportion to its tokens: prefill gets ``p / (p + d)`` of its energy. This assumes a
  scheduled token costs the same whatever its kind, which holds for the weight GEMMs (the same
  per token) but not for attention, where a decode token reads its whole context's KV cache;
  so with long contexts the split somewhat overstates prefill's share. The share of the
  attributed energy that came from mixed steps is in the figures' source (``mixed_energy_frac=``) and in the
  extra key ``mixed_step_energy_frac``, so a reader sees how much rests on the split.
* A step that scheduled no token is attributed to neither.
* Energy between steps (the engine's gaps: scheduling, detokenising, the client's turn) falls in
  no step and is not attributed: ``prefill_energy_j + decode_energy_j`` is less than the window's
  energy. The unattributed share (gaps and token-less steps) of the counter's advance from the
  first step's start to the last step's end is in the source (``unattributed_frac=``) and the
  extra key ``unattributed_energy_frac``; energy before the first step and after the last is
  outside that span (the window's ``energy_j`` has it).

Too coarse a counter. The counter advances in steps (NVML: ~12 times a second, every ~83 ms).
Where that is longer than the median step, most steps see a difference of zero and a few see a
whole update's jump, so per-step differences say which steps happened to straddle an update,
not what they cost: both figures are missing, naming both numbers. (Summed over many steps the
jumps would average out only if updates fell independently of the step kinds, which a
periodic engine loop does not guarantee.) Without a counter both are missing with the
monitor's reason.

:func:`attribute` returns the two record figures under ``prefill_energy_j`` and
``decode_energy_j``, plus two figures that are not record columns
(``mixed_step_energy_frac``, ``unattributed_energy_frac``): take the record's by name.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .figure import Figure

RECORD_KEYS = ("prefill_energy_j", "decode_energy_j")  # the record columns attribute() fills
DETAIL_KEYS = ("mixed_step_energy_frac", "unattributed_energy_frac")  # not record columns


@dataclass
class Step:
    """One engine step: its edges (monotonic s), the counter at them (cumulative J, None without
    a counter) and the tokens it scheduled of each kind."""

    t0: float
    t1: float
    e0: float | None
    e1: float | None
    prefill_tokens: int
    decode_tokens: int


def _ms(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s >= 0.0095 else f"{s * 1000:.1f} ms"


def _missing(reason: str) -> dict[str, Figure]:
    return {k: Figure.missing(reason) for k in RECORD_KEYS + DETAIL_KEYS}


def attribute(steps: Sequence[Step], update_period_s: float | None, missing_reason: str | None,
              counter_source: str = "energy_counter") -> dict[str, Figure]:
    """``prefill_energy_j`` and ``decode_energy_j`` from engine steps (see the module doc), and
    ``mixed_step_energy_frac`` / ``unattributed_energy_frac`` (not record columns).

    update_period_s: seconds between the counter's updates (``Monitor.energy_update_period_s``;
    None: unknown, not checked). missing_reason: why there is no counter
    (``Monitor.energy_missing_reason``, read after the steps), used when a step lacks a reading.
    counter_source: the counter's name for the figures' source (``Backend.energy_source``).
    """
    if not steps:
        return _missing("no engine steps were recorded")
    if any(s.e0 is None or s.e1 is None for s in steps):
        return _missing(missing_reason or "the energy counter was not read at every engine step's edges")
    steps = sorted(steps, key=lambda s: s.t0)
    median = statistics.median(s.t1 - s.t0 for s in steps)
    if update_period_s is not None and update_period_s > median:
        return _missing(f"counter updates every {_ms(update_period_s)}, engine steps take {_ms(median)} "
                        f"(median): too coarse to attribute per step")
    prefill = decode = mixed = 0.0
    for s in steps:
        e = s.e1 - s.e0  # type: ignore[operator]
        if e < 0:
            return _missing(f"the energy counter went backwards across the step at {s.t0:.3f} s "
                            f"({s.e0} J to {s.e1} J)")
        p, d = max(s.prefill_tokens, 0), max(s.decode_tokens, 0)
        if p and d:
            mixed += e
            prefill += e * p / (p + d)
            decode += e * d / (p + d)
        elif p:
            prefill += e
        elif d:
            decode += e
    span = steps[-1].e1 - steps[0].e0  # type: ignore[operator]
    attributed = prefill + decode
    mixed_frac = mixed / attributed if attributed > 0 else 0.0
    # Overlapping steps (not a serial engine) would count energy twice: the share is never negative.
    gap_frac = max(0.0, span - attributed) / span if span > 0 else 0.0
    source = (f"{counter_source}/engine_steps(mixed_split=tokens,mixed_energy_frac={mixed_frac:.3f},"
              f"unattributed_frac={gap_frac:.3f})")
    return {
        "prefill_energy_j": Figure.of(prefill, source),
        "decode_energy_j": Figure.of(decode, source),
        "mixed_step_energy_frac": Figure.of(mixed_frac, source),
        "unattributed_energy_frac": Figure.of(gap_frac, source),
    }
