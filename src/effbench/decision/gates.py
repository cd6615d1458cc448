"""What ``recommend`` leaves out or warns about before comparing serving rows: precisions that
failed their fidelity check (:func:`fidelity_gate`), and energy counted over different hardware
(:func:`energy_scope_warning`: the candidates' ``energy_scope`` differ, effbench.measure.energy_scope).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..aggregate.frame import is_missing
from ..aggregate.scopes import distinct_scopes
from ..aggregate.specs import ENERGY_COLUMNS
from ..fidelity.table import VERDICT
from ..measure.energy_scope import mixed_scope_flag
from .constraints import SERVE


def fidelity_gate(inf: pd.DataFrame, allow: bool) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The serving rows ``recommend`` may choose from: without the precisions that failed their
    fidelity check unless ``allow``; and one entry per failing model × precision (``model``,
    ``precision``, ``cells``, ``reason``, ``left_out``, ``line``). A row with no verdict (fidelity not
    run) is kept: only a measured failure leaves a precision out."""
    if not len(inf) or VERDICT not in inf.columns:
        return inf, []
    failed = inf[inf[VERDICT] == "fail"]
    out = []
    for (model, precision), g in failed.groupby(["model", "precision"], sort=False):
        why = g.iloc[0].get(VERDICT + "__reason")
        why = None if is_missing(why) else str(why)
        out.append({"model": str(model), "precision": str(precision), "cells": [str(x) for x in g["cell"]],
                    "reason": why, "left_out": not allow,
                    "line": f"{model} {precision} failed fidelity" + (f" ({why})" if why else "")})
    return (inf if allow else inf[inf[VERDICT] != "fail"]), out


def fidelity_notes(res: dict[str, Any], failed: list[dict[str, Any]]) -> None:
    """The precision step's lines for every failing precision (each names its model): left out,
    or kept on request."""
    for f in failed:
        if f["left_out"]:
            res.setdefault("not_candidates", []).append(
                f"left out: {f['line']} [{', '.join(f['cells'])}]; --allow-fidelity-fail keeps it")
        else:
            res.setdefault("warnings", []).append(f"kept although {f['line']} (allow_fidelity_fail)")


def energy_scope_warning(ok: pd.DataFrame, columns: list[str]) -> str | None:
    """A warning when the candidates' energy figures among ``columns`` (a step's objective and
    checks; ``serve.``-prefixed ones are the joined serving figures, with their own scope) were
    counted over different hardware, else None."""
    for prefix in ("", SERVE):
        energy = [c for c in columns if c.startswith(prefix) and c[len(prefix):] in ENERGY_COLUMNS]
        scope = prefix + "energy_scope"
        if not energy or scope not in ok.columns:
            continue
        scopes = distinct_scopes(s for (_, r), s in zip(ok.iterrows(), ok[scope])
                                 if any(not is_missing(r.get(c)) for c in energy))
        flag = mixed_scope_flag(scopes)
        if flag:
            return f"{flag}; the energy comparison and any energy limit here treat them alike"
    return None
