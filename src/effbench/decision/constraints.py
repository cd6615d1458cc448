"""What ``recommend`` checks: a user's constraints, the checks each step of the paper's path makes
on its candidate rows, and one check's outcome (pass, fail, borderline, unverified).

A figure a constraint needs that was not measured makes that check "unverified": nothing is assumed
to fit. A value whose 95 % interval straddles the limit passes on its value and is flagged
"borderline".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from ..aggregate.specs import HIGHER, LOWER
from .axes import interval, missing_reason, value
from .goodput import FRAC, RPS

PRECISION_OBJECTIVES = {  # precision_objective -> (column, label, direction)
    "memory": ("amu_gb", "AMU, average memory while serving (GB)", LOWER),
    "latency": ("tpot_s_mean", "TPOT, time per output token (s)", LOWER),
    "throughput": ("it_tokens_per_s", "IT, generated tokens/s", HIGHER),
    "energy": ("energy_j_per_token", "energy per generated token (J)", LOWER),
    "quality": ("accuracy", "benchmark accuracy", HIGHER),
}


NAMES = ("load_point", "technique", "model", "precision")  # constraints that name something measured


@dataclass(frozen=True)
class Constraints:
    """A user's limits (None: no limit). Units: GB, ms per output token, s per request, generated
    tokens/s, J per generated token, a fraction of the baseline's accuracy, parameters.
    ``allow_fidelity_fail``: keep a precision that failed its fidelity check (docs/fidelity.md)
    among the candidates; by default it is left out, and the answer says so."""

    memory_gb: float | None = None
    latency_ms_per_token: float | None = None
    latency_s_per_request: float | None = None
    min_throughput_tokens_per_s: float | None = None
    energy_j_per_token: float | None = None
    max_accuracy_drop: float | None = 0.05
    model_params: float | None = None
    load_point: str | None = None
    precision_objective: str = "memory"
    allow_fidelity_fail: bool = False
    # What the user asks about (command-line only; None: every measured one is a candidate): the
    # architecture step judges only this pretraining technique, the fine-tuning and precision steps
    # only this model, the precision step only this precision.
    technique: str | None = None
    model: str | None = None
    precision: str | None = None
    # A goodput floor (requests/s, and the share of requests, that met both SLOs) and the SLOs it is
    # judged under (ms; None: as each record measured them): effbench.decision.goodput.
    min_goodput_rps: float | None = None
    min_goodput_frac: float | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None

    def __post_init__(self) -> None:
        if self.precision_objective not in PRECISION_OBJECTIVES:
            raise ValueError(f"precision_objective {self.precision_objective!r} is not one of "
                             f"{sorted(PRECISION_OBJECTIVES)}")
        if not isinstance(self.allow_fidelity_fail, bool):
            raise ValueError(f"allow_fidelity_fail must be true or false, got {self.allow_fidelity_fail!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in NAMES + ("precision_objective", "allow_fidelity_fail") and v is not None and not (
                    isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"constraint {f.name} must be a number ≥ 0 or unset, got {v!r}")
        if self.min_goodput_frac is not None and self.min_goodput_frac > 1:
            raise ValueError("constraint min_goodput_frac must be a fraction from 0 to 1, "
                             f"got {self.min_goodput_frac!r}")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "Constraints":
        known = {f.name for f in fields(cls)}
        unknown = set(m) - known
        if unknown:
            raise ValueError(f"unknown constraint(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(m))

    def limits(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k in LIMITS and v is not None}


@dataclass(frozen=True)
class Check:
    """One constraint checked on one column of a step's candidate rows."""

    constraint: str
    column: str
    label: str
    scale: float = 1.0  # the column × scale is in the constraint's unit
    at_most: bool = True  # the value must be ≤ the limit (else ≥)


# constraint -> its unit, for messages
LIMITS = {"memory_gb": "GB", "latency_ms_per_token": "ms/token", "latency_s_per_request": "s/request",
          "min_throughput_tokens_per_s": "tokens/s", "energy_j_per_token": "J/token",
          "max_accuracy_drop": "of the baseline's accuracy", "min_goodput_rps": "requests/s within the SLOs",
          "min_goodput_frac": "of requests within the SLOs"}
SERVE = "serve."  # prefix of the serving figures joined onto a pretraining candidate


def serving_checks(prefix: str, at: str) -> list[Check]:
    return [
        Check("latency_ms_per_token", prefix + "tpot_s_mean", f"TPOT{at} (ms)", 1000.0),
        Check("latency_s_per_request", prefix + "e2e_s_mean", f"E2E per request{at} (s)"),
        Check("min_throughput_tokens_per_s", prefix + "it_tokens_per_s", f"IT{at} (tokens/s)", at_most=False),
        Check("energy_j_per_token", prefix + "energy_j_per_token", f"energy per token{at} (J)"),
        Check("max_accuracy_drop", prefix + "accuracy_drop", f"accuracy drop vs the baseline{at} (fraction)"),
        Check("min_goodput_rps", prefix + RPS, f"goodput under the SLOs{at} (req/s)", at_most=False),
        Check("min_goodput_frac", prefix + FRAC, f"goodput share under the SLOs{at}", at_most=False),
    ]


@dataclass(frozen=True)
class Step:
    name: str
    axis: str  # frame
    candidate: str
    question: str
    objective: tuple[str, str, str]  # column, label, direction
    checks: tuple[Check, ...]
    uses: tuple[str, ...] = ()  # constraints it applies other than by a check


def steps(objective: str) -> list[Step]:
    at = " served"
    return [
        Step("architecture", "pretrain", "technique", "Which attention / MoE architecture?",
             ("ppl", "validation perplexity (PPL)", LOWER),
             # The accuracy drop is a precision's: here it only picks which precision's figures stand
             # for the technique (join_serving), so an architecture never served is not excluded by it.
             (Check("memory_gb", "peak_mem_gb", "peak memory while pretraining (GB)"),
              *(ck for ck in serving_checks(SERVE, at) if ck.constraint != "max_accuracy_drop")),
             ("max_accuracy_drop",)),
        Step("fine-tuning", "finetune", "method", "Which fine-tuning method?",
             ("val_loss", "held-out loss", LOWER),
             (Check("memory_gb", "peak_mem_gb", "peak memory while fine-tuning (GB)"),)),
        Step("precision", "inference", "precision", "Which precision to serve at?", PRECISION_OBJECTIVES[objective],
             (Check("memory_gb", "peak_mem_gb", "peak memory while serving (GB)"), *serving_checks("", ""))),
    ]


# --- one check --------------------------------------------------------------------------------------

def check_row(row: pd.Series, ck: Check, limit: float) -> dict[str, Any]:
    v = value(row, ck.column)
    out: dict[str, Any] = {"constraint": ck.constraint, "label": ck.label, "limit": limit,
                           "at_most": ck.at_most, "column": ck.column}
    if v is None:
        return {**out, "status": "unverified", "value": None, "reason": missing_reason(row, ck.column)}
    v *= ck.scale
    ok = v <= limit if ck.at_most else v >= limit
    iv = interval(row, ck.column)
    straddles = iv is not None and iv.low * ck.scale <= limit <= iv.high * ck.scale
    out.update(value=v, ci_low=iv.low * ck.scale if iv else None, ci_high=iv.high * ck.scale if iv else None)
    return {**out, "status": ("pass" if ok else "fail") + (" (borderline: its 95 % interval spans the limit)"
                                                              if straddles else "")}


def passes(chk: dict[str, Any]) -> bool:
    return chk["status"].startswith("pass")
