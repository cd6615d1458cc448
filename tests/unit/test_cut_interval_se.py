"""An interval cut at 0 keeps its uncut standard error where the decision layer and the
leaderboard back one out of it (the longer side, around the figure's value)."""

from __future__ import annotations

import pandas as pd
import pytest

from effbench.decision.axes import standard_error
from effbench.measure.spread import Z95


def test_a_cut_interval_backs_out_its_uncut_se():
    # value 0.4 ± 0.6 (normal method), cut at 0: [0, 1.0]; the half-width (0.5) would understate it
    row = pd.Series({"x": 0.4, "x__ci_low": 0.0, "x__ci_high": 1.0, "x__ci_n": 30, "x__ci_method": "normal_se"})
    assert standard_error(row, "x") == pytest.approx(0.6 / Z95)


def test_a_symmetric_interval_gives_its_half_width():
    row = pd.Series({"x": 0.5, "x__ci_low": 0.2, "x__ci_high": 0.8, "x__ci_n": 30, "x__ci_method": "normal_se"})
    assert standard_error(row, "x") == pytest.approx(0.3 / Z95)
