"""Open-loop arrival times of a load point (pure).

A rate load point (``mode: rate``) sends ``requests`` requests whose arrivals follow a Poisson
process of ``rate`` requests/s (exponential gaps) or come at constant gaps of 1/rate, as vLLM's
``vllm bench serve --request-rate R`` sends them (``vllm/benchmarks/serve.py`` ``get_request``,
burstiness 1 for Poisson, ∞ for constant, no ramp-up). The same semantics:

- the offsets are cumulative sums of the gaps, so the first request arrives at its own gap
  after the repeat's start (not at 0); the repeat's start is the origin of the offsets;
- the offsets are then rescaled so that the last one is exactly ``n / rate`` (vLLM does so
  "to stabilize the throughput data from different random seeds"): every repeat offers its
  requests over the same ``n / rate`` seconds. Constant gaps are unchanged by it: k / rate.

Seeded per repeat: the seed tag names the settings' seed, the load point and the repeat index
(:func:`seed_tag`), so each repeat is an independent replicate and a rerun repeats it exactly.
(vLLM draws its gaps from numpy's global generator seeded by ``--seed``: same process, other
numbers.)
"""

from __future__ import annotations

import random

KINDS = ("poisson", "constant")


def seed_tag(seed: int, load_point: str, repeat: int) -> str:
    """The seed tag of one repeat's arrivals: a new, independent draw per repeat."""
    return f"arrivals:{seed}:{load_point}:repeat{repeat}"


def arrival_offsets(n: int, rate: float, kind: str, seed_tag: str) -> list[float]:
    """Seconds from the repeat's start at which each of ``n`` requests arrives (ascending; the
    first at its own gap, the last at exactly ``n / rate``)."""
    if n < 1:
        raise ValueError("an open-loop repeat needs at least one request")
    if not rate > 0 or rate == float("inf"):
        raise ValueError(f"the arrival rate must be positive and finite, got {rate}")
    if kind == "constant":
        return [(i + 1) / rate for i in range(n)]
    if kind != "poisson":
        raise ValueError(f"unknown arrivals {kind!r}: one of {', '.join(KINDS)}")
    rng = random.Random(seed_tag)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    scale = (n / rate) / out[-1]
    return [x * scale for x in out]
