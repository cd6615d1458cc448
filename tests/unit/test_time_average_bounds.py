"""A time average never leaves the range of what it averages (AMU ≤ peak, exactly).

Found by a flaky serving test: a constant memory series averaged to one ulp above itself, so a
record's AMU (0.5758699520000001 GB) read above its own peak sample (0.575869952 GB)."""

from __future__ import annotations

import random

from effbench.measure import formulas


def test_a_constant_series_averages_to_itself_exactly():
    rng = random.Random(0)
    value = 575_869_952.0
    for _ in range(500):
        n = rng.randint(2, 40)
        ts = sorted(rng.uniform(0, 10) for _ in range(n))
        t0 = rng.uniform(ts[0], ts[-1])
        t1 = t0 + rng.uniform(1e-3, 5)
        assert formulas.time_average(ts, [value] * n, t0, t1) == value
        assert formulas.amu_gb(ts, [value] * n, t0, t1) <= value / formulas.GB


def test_the_average_stays_inside_the_window_values_range():
    rng = random.Random(1)
    for _ in range(500):
        n = rng.randint(2, 30)
        ts = sorted(rng.uniform(0, 10) for _ in range(n))
        vs = [rng.choice([3.3, 7.7, 1e9 / 3]) for _ in range(n)]
        t0 = rng.uniform(ts[0], ts[-1])
        t1 = t0 + rng.uniform(1e-3, 5)
        xt, xv = formulas._clip_series(ts, vs, t0, t1)
        assert min(xv) <= formulas.time_average(ts, vs, t0, t1) <= max(xv)
