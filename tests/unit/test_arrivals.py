"""Open-loop arrival times (effbench.inference.arrivals): vLLM bench serve's semantics, and a
seeded Poisson process whose gaps and counts look Poisson within stated tolerances."""

from __future__ import annotations

import math

import pytest

from effbench.inference.arrivals import arrival_offsets, seed_tag

N, RATE = 20_000, 4.0


def _gaps(offsets: list[float]) -> list[float]:
    return [offsets[0]] + [b - a for a, b in zip(offsets, offsets[1:])]


def test_constant_arrivals_are_exact():
    assert arrival_offsets(4, 2.0, "constant", "x") == [0.5, 1.0, 1.5, 2.0]  # first at its own gap, as vLLM


def test_poisson_arrivals_follow_vllm_bench_serve():
    off = arrival_offsets(50, RATE, "poisson", seed_tag(0, "p", 0))
    assert off[0] > 0 and all(a < b for a, b in zip(off, off[1:]))  # first at its own gap, ascending
    assert off[-1] == pytest.approx(50 / RATE, rel=1e-12)  # rescaled: the last at n / rate, as vLLM
    assert off == arrival_offsets(50, RATE, "poisson", seed_tag(0, "p", 0))  # seeded
    # each repeat (and each load point, each seed) is a new, independent draw
    assert off != arrival_offsets(50, RATE, "poisson", seed_tag(0, "p", 1))
    assert off != arrival_offsets(50, RATE, "poisson", seed_tag(1, "p", 0))


def test_poisson_gaps_are_exponential():
    gaps = _gaps(arrival_offsets(N, RATE, "poisson", seed_tag(7, "stat", 0)))
    mean = sum(gaps) / N
    assert mean == pytest.approx(1 / RATE, rel=1e-9)  # exact after vLLM's rescaling
    var = sum((g - mean) ** 2 for g in gaps) / (N - 1)
    # variance / mean² of exponential gaps is 1; its estimate's SE is sqrt(8 / N) ≈ 0.02: 5 SE
    assert var / mean**2 == pytest.approx(1.0, abs=5 * math.sqrt(8 / N))
    # P(gap > mean) = e^-1 for an exponential; SE sqrt(p (1 - p) / N) ≈ 0.0034: 5 SE
    p = math.exp(-1)
    assert sum(g > mean for g in gaps) / N == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / N))


def test_poisson_counts_have_unit_dispersion():
    off = arrival_offsets(N, RATE, "poisson", seed_tag(3, "stat", 0))
    windows = int(N / RATE)  # 1 s windows over the n / rate seconds: RATE arrivals expected in each
    counts = [0] * windows
    for t in off:
        counts[min(int(t), windows - 1)] += 1
    mean = sum(counts) / windows
    var = sum((c - mean) ** 2 for c in counts) / (windows - 1)
    # index of dispersion var / mean of Poisson counts is 1 (the fixed total makes it 1 − 1/windows);
    # its SE is about sqrt(2 / (windows − 1)) ≈ 0.02: 5 SE
    assert var / mean == pytest.approx(1.0, abs=5 * math.sqrt(2 / (windows - 1)))
    # constant arrivals: the same rate, no dispersion
    const = arrival_offsets(N, RATE, "constant", "c")
    cc = [0] * windows
    for t in const:
        cc[min(int(t - 1e-9), windows - 1)] += 1
    assert set(cc) == {int(RATE)}


@pytest.mark.parametrize("n, rate, kind", [(0, 1.0, "poisson"), (3, 0.0, "poisson"), (3, math.inf, "constant"),
                                           (3, 1.0, "gamma")])
def test_bad_arrivals_are_refused(n, rate, kind):
    with pytest.raises(ValueError):
        arrival_offsets(n, rate, kind, "x")
