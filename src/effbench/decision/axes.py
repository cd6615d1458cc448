"""What each axis compares: the record column naming its candidates, the cells compared together,
and its objectives (quality, memory, latency, throughput, energy) with their directions.

One definition serves the Pareto fronts, the scaling fits and ``recommend``. Also the small
readers of a frame row every module needs: a figure's value, its 95 % interval, why it is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..aggregate.frame import is_missing
from ..aggregate.specs import HIGHER, LOWER
from ..aggregate.tables import format_with_interval
from ..measure.spread import Interval, se_from_interval

KINDS = ("quality", "memory", "latency", "throughput", "energy")


@dataclass(frozen=True)
class Objective:
    kind: str  # one of KINDS
    column: str  # record column
    label: str  # header with unit
    better: str  # LOWER | HIGHER


@dataclass(frozen=True)
class Axis:
    name: str
    stage: str  # the frame the rows come from
    title: str
    candidate: str  # column naming what is compared (technique, method, precision, variant)
    group_by: tuple[str, ...]  # cells compared together: one front, one choice
    objectives: tuple[Objective, ...]
    size: str = "params_total"  # model size for the scaling fits


_MEM = Objective("memory", "amu_gb", "AMU (GB)", LOWER)
_ENERGY = Objective("energy", "energy_j_per_token", "Energy (J/token)", LOWER)
_SERVE = (
    Objective("quality", "accuracy", "Accuracy", HIGHER),
    _MEM,
    Objective("latency", "tpot_s_mean", "TPOT (s)", LOWER),
    Objective("throughput", "it_tokens_per_s", "IT (tok/s)", HIGHER),
    _ENERGY,
)

PRETRAIN = Axis(
    "pretrain", "pretrain", "Pretraining: attention and architecture variants", "technique", ("size",),
    (Objective("quality", "ppl", "PPL", LOWER), _MEM, Objective("latency", "al_s_per_iter", "AL (s/iter)", LOWER),
     Objective("throughput", "tokens_per_s", "Tokens/s", HIGHER), _ENERGY),
)
FINETUNE = Axis(
    "finetune", "finetune", "Fine-tuning methods", "method", ("model", "task"),
    (Objective("quality", "val_loss", "Held-out loss", LOWER), _MEM,
     Objective("latency", "al_s_per_iter", "AL (s/iter)", LOWER),
     Objective("throughput", "tokens_per_s", "Tokens/s", HIGHER), _ENERGY),
)
INFERENCE = Axis("inference", "inference", "Precision at serving time", "precision", ("model", "load_point"), _SERVE)
# Across axes: each served model's pretraining variant × its precision, compared at one
# pretraining size and load point (columns joined by .frames).
CROSS = Axis("cross", "inference", "Pretraining variant × precision at serving time", "variant",
             ("pretrain_size", "load_point"), _SERVE)

AXES = {a.name: a for a in (PRETRAIN, FINETUNE, INFERENCE, CROSS)}


def value(row: pd.Series, column: str) -> float | None:
    v = row.get(column)
    if is_missing(v):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def interval(row: pd.Series, column: str) -> Interval | None:
    """The figure's recorded 95 % interval, or None when its noise was not measured."""
    low, high = row.get(column + "__ci_low"), row.get(column + "__ci_high")
    if is_missing(low) or is_missing(high):
        return None
    n, method = row.get(column + "__ci_n"), row.get(column + "__ci_method")
    return Interval(float(low), float(high), 0 if is_missing(n) else int(n),
                    "unknown" if is_missing(method) else str(method))


def standard_error(row: pd.Series, column: str) -> float | None:
    iv = interval(row, column)
    if iv is None:
        return None
    value = row.get(column)  # an interval cut at 0 keeps its uncut SE (its longer side)
    return se_from_interval(iv, None if is_missing(value) else float(value))


def missing_reason(row: pd.Series, column: str) -> str:
    why = row.get(column + "__missing")
    if not is_missing(why):
        return str(why)
    return "not in the record" if column not in row.index else "no reason recorded"


def shown(row: pd.Series, column: str, fmt: str = "sig4") -> str:
    """``value ± half-width`` as the tables print it, or ``n/a``."""
    v = value(row, column)
    if v is None:
        return "n/a"
    return format_with_interval(v, row.get(column + "__ci_low"), row.get(column + "__ci_high"), fmt)


def figure_json(row: pd.Series, column: str) -> dict[str, Any]:
    """One figure as evidence: value, interval, its source, or why it is missing."""
    iv = interval(row, column)
    v = value(row, column)
    out: dict[str, Any] = {"column": column, "value": v}
    if v is None:
        out["missing"] = missing_reason(row, column)
        return out
    out["ci_low"], out["ci_high"] = (iv.low, iv.high) if iv else (None, None)
    out["ci_method"] = iv.method if iv else None
    src = row.get(column + "__source")
    out["source"] = None if is_missing(src) else str(src)
    return out


def better_than(a: float, b: float, better: str) -> bool:
    return a < b if better == LOWER else a > b
