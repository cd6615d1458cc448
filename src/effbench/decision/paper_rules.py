"""The paper's rules of thumb (EfficientLLM, arXiv 2505.13840), each evaluated on its own premise and
set beside the measured answer; never used to choose.

- architecture: MQA when device memory is under 50 GB, MoE when it is over 100 GB; the premise is
  the device memory the user gives (``memory_gb``);
- fine-tuning: LoRA-plus for models under 3B parameters, RSLoRA beyond 14B; the premise is the size
  of the model the user asks about (``model_params``), else, and then said, the measured models'
  size;
- precision: int4 when its 3-5 % accuracy drop is acceptable; the premise is the int4 drop measured
  on the precision step's model against its baseline precision, with its 95 % interval (a drop whose
  interval holds 0 is not significant), held against the user's tolerance (``max_accuracy_drop``,
  else the paper's 5 %). A measured drop beyond the tolerance is not recommended.

Also the warning for a ``model_params`` far outside the sizes a step measured: its answer then
extrapolates from models of another scale.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..aggregate.frame import is_missing
from ..aggregate.tables import format_value
from .axes import interval, missing_reason, value
from .constraints import Constraints

LORAPLUS_BELOW = 3e9  # parameters
RSLORA_ABOVE = 14e9
PAPER_DROP = 0.05  # the paper's "3-5 % accuracy drop": its upper end
FAR = 10.0  # model_params more than this factor outside the measured sizes is an extrapolation


def _pct(x: float) -> str:
    return format_value(100 * x, "sig2") + " %"


def architecture_rule(c: Constraints) -> dict[str, Any]:
    rule = "MQA when device memory is under 50 GB, MoE when it is over 100 GB"
    m = c.memory_gb
    if m is None:
        return {"rule": rule, "says": None, "premise": "It needs the device memory, and no memory_gb was given."}
    says = "mqa" if m < 50 else "moe" if m > 100 else None
    return {"rule": rule, "says": says,
            "premise": f"Evaluated at the device memory given, memory_gb = {m:g} GB"
                       + ("." if says else ", between its 50 and 100 GB thresholds.")}


def finetune_rule(c: Constraints, measured_params: float | None) -> dict[str, Any]:
    rule = "LoRA-plus for models under 3B parameters, RSLoRA beyond 14B"
    if c.model_params:
        params, premise = c.model_params, (f"Evaluated at {format_value(c.model_params, 'params')} parameters "
                                           "(model_params, the size asked)")
    elif measured_params is not None:
        params, premise = measured_params, (f"Evaluated at {format_value(measured_params, 'params')} parameters "
                                            "(the measured models' size: no model_params given)")
    else:
        return {"rule": rule, "says": None, "params": None, "params_from": None,
                "premise": "It needs a model size, and no model_params was given and none was measured."}
    says = "loraplus" if params < LORAPLUS_BELOW else "rslora" if params > RSLORA_ABOVE else None
    return {"rule": rule, "says": says, "params": params,
            "params_from": "model_params" if c.model_params else "measured",
            "premise": premise + ("." if says else ", between its 3B and 14B thresholds.")}


def int4_rule(c: Constraints, rows: pd.DataFrame, baseline: str | None) -> dict[str, Any]:
    """``rows``: the precision step's group (one model at one load point), with ``accuracy_drop``."""
    rule = "int4 when a 3-5 % accuracy drop is acceptable"
    tol, tol_from = ((c.max_accuracy_drop, "max_accuracy_drop") if c.max_accuracy_drop is not None
                     else (PAPER_DROP, "the paper's 5 %: no max_accuracy_drop given"))
    out: dict[str, Any] = {"rule": rule, "says": None, "measured": None}
    int4 = ([r for _, r in rows.iterrows() if r.get("precision") == "int4" and r.get("status") == "ok"]
            if len(rows) and "precision" in rows else [])
    if not int4:
        return {**out, "premise": f"It fires on a measured drop, and no int4 record was measured ok here "
                                  f"(baseline {baseline}): nothing to fire on."}
    r = int4[0]
    d = value(r, "accuracy_drop")
    if d is None:
        return {**out, "premise": "It fires on a measured drop, and int4's accuracy drop was not measured: "
                                  + missing_reason(r, "accuracy_drop") + "."}
    iv = interval(r, "accuracy_drop")
    significant = None if iv is None else not (iv.low <= 0 <= iv.high)
    noise = ("noise unknown (no interval)" if iv is None else
             f"95 % interval {_pct(iv.low)} to {_pct(iv.high)}, "
             + ("significant" if significant else "not significant: within noise of no drop"))
    measured = {"precision": "int4", "cell": str(r["cell"]), "baseline": baseline, "drop": d,
                "ci_low": iv.low if iv else None, "ci_high": iv.high if iv else None, "significant": significant,
                "tolerance": tol, "tolerance_from": tol_from}
    said = f"Measured int4 accuracy drop vs {baseline}: {_pct(d)} ({noise})"
    if d > tol:
        return {**out, "measured": measured,
                "premise": said + f", beyond the tolerated {_pct(tol)} ({tol_from}): it does not recommend int4."}
    edge = "; its interval reaches beyond the tolerance (borderline)" if iv is not None and iv.high > tol else ""
    return {**out, "says": "int4", "measured": measured,
            "premise": said + f", within the tolerated {_pct(tol)} ({tol_from}){edge}."}


def paper_rule(step: str, c: Constraints, rows: pd.DataFrame, measured_params: float | None,
               baseline: str | None, pick: str | None) -> dict[str, Any]:
    """The step's rule on its premise, and whether the measured choice ``pick`` agrees."""
    if step == "architecture":
        out = architecture_rule(c)
    elif step == "fine-tuning":
        out = finetune_rule(c, measured_params)
    else:
        out = int4_rule(c, rows, baseline)
    out["agrees"] = None if out["says"] is None or pick is None else pick == out["says"]
    return out


def _times(x: float) -> str:
    return (f"{x:,.0f}" if x >= 100 else format_value(x, "sig2")) + "×"


def size_warning(c: Constraints, df: pd.DataFrame, what: str) -> str | None:
    """A warning when ``model_params`` is more than :data:`FAR` times above the largest or below the
    smallest model measured on this axis (``df``, every group)."""
    if not c.model_params or not len(df) or "params_total" not in df:
        return None
    sizes = [value(r, "params_total") for _, r in df.iterrows() if not is_missing(r.get("params_total"))
             and r.get("status") == "ok"]
    sizes = [s for s in sizes if s is not None and s > 0]
    if not sizes:
        return None
    lo, hi, p = min(sizes), max(sizes), c.model_params
    span = format_value(lo, "params") + ("" if lo == hi else "–" + format_value(hi, "params"))
    asked = f"model_params {format_value(p, 'params')}"
    if p > FAR * hi:
        where = f"is {_times(p / hi)} the largest {what} model measured ({span})"
    elif p < lo / FAR:
        where = f"is {_times(lo / p)} below the smallest {what} model measured ({span})"
    else:
        return None
    return (f"{asked} {where}: this answer extrapolates from models of another scale, and what holds for "
            f"them may not hold at {format_value(p, 'params')}")
