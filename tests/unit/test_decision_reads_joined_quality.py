"""The decision layer keeps what the aggregation joined: the paired accuracy drop (not an
unpaired recomputation), and a foreign-loaded cell as shared."""

from __future__ import annotations

import pandas as pd

from effbench.aggregate.tables import shared_reasons
from effbench.decision.recommend import with_accuracy_drop


def _rows(**extra):
    base = {"model": "m", "load_point": "offline", "accuracy": 0.8, "accuracy__ci_low": 0.7, "accuracy__ci_high": 0.9,
            "accuracy__ci_n": 200, "accuracy__ci_method": "normal_se"}
    return pd.DataFrame([{**base, "precision": "bf16", **extra.get("bf16", {})},
                         {**base, "precision": "int4", "accuracy": 0.7, **extra.get("int4", {})}])


def test_a_joined_paired_drop_is_kept():
    paired = {"accuracy_drop": 0.125, "accuracy_drop__source": "1 - Perf / Perf at bf16, the same tasks",
              "accuracy_drop__ci_low": 0.08, "accuracy_drop__ci_high": 0.17, "accuracy_drop__ci_method": "delta_method"}
    frame = _rows(int4=paired, bf16={"accuracy_drop": 0.0, "accuracy_drop__source": "baseline"})
    out = with_accuracy_drop(frame, "bf16")
    assert out.loc[1, "accuracy_drop__ci_low"] == 0.08 and out.loc[1, "accuracy_drop__ci_high"] == 0.17


def test_without_a_joined_drop_it_is_computed_unpaired():
    out = with_accuracy_drop(_rows(), "bf16")
    assert out.loc[1, "accuracy_drop"] == 1 - 0.7 / 0.8
    assert out.loc[1, "accuracy_drop__ci_low"] < out.loc[1, "accuracy_drop"] < out.loc[1, "accuracy_drop__ci_high"]


def test_foreign_load_alone_makes_a_cell_shared():
    quiet = {"alone": True, "foreign_load": False}
    loaded = {"alone": True, "foreign_load": True, "foreign_cpu_s": 14.0, "foreign_cpu_frac": 0.7, "host_cpus": 2}
    assert shared_reasons(quiet) == []
    (why,) = shared_reasons(loaded)
    assert "foreign load" in why and "14 CPU-s" in why
