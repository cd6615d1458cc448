"""``recommend``: the paper's path (architecture, then fine-tuning method, then precision) walked
from the measured records under a user's constraints, each choice with its evidence.

Every step compares the candidates of one group of cells (one size, one model × task, one model
at one load point), keeps those that meet every constraint the step can check, and picks the best
by the step's objective:

- architecture: the pretraining techniques at one size, by PPL; checks the pretraining peak memory
  and the serving limits (latency, throughput, energy) on the technique's served model at its first
  precision (the baseline first) that meets them and the accuracy drop, else at the baseline;
- fine-tuning: the methods on one model × task, by held-out loss; checks the fine-tuning peak memory;
- precision: the precisions of one model at one load point, by ``precision_objective`` (AMU by
  default); checks memory, latency, throughput, energy and the accuracy drop vs the baseline.

A figure a constraint needs that was not measured leaves that candidate out as "unverified" (its
reason quoted): nothing is assumed to fit. A value whose 95 % interval straddles the limit passes
on its value and is flagged "borderline". The winner's runner-up is given with the margin; when
their intervals overlap the two are "indistinguishable within noise" (docs/noise.md's tie rule),
and a margin without intervals has "noise unknown". When no candidate qualifies the answer says
so and names the binding constraint: the one whose relaxation alone admits the most candidates
(if none alone would, the one that removes the most), with the best measured value beside its
limit. The paper's rules of thumb are never used to choose; each step states its rule evaluated on
its own premise and whether the measured answer agrees (:mod:`.paper_rules`), and warns when the
size asked (``model_params``) is far outside the sizes it measured.

A precision that failed its fidelity check (``fid_verdict`` = fail: KL or top-1 agreement against
the baseline beyond docs/fidelity.md's thresholds) is left out of every step that reads serving
rows, and the answer says so with the figures ("left out: xs-gqa int4 failed fidelity (KL mean
0.099 > 0.05; …)"); ``allow_fidelity_fail`` (``--allow-fidelity-fail``) keeps it, with a warning.

A goodput floor (``min_goodput_rps`` / ``min_goodput_frac``) is checked on the goodput measured at
any load point under SLOs no looser than asked (:mod:`.goodput`); candidates whose energy figures
were counted over different hardware are warned about (:mod:`.gates`, with the fidelity gate).
The constraints and checks are in :mod:`.constraints`, the Markdown and JSON in :mod:`.recommend_render`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pandas as pd

from ..aggregate.frame import is_missing
from ..aggregate.specs import LOWER
from ..aggregate.tables import format_value, shared_reasons
from ..measure import spread
from .axes import figure_json, interval, missing_reason, shown, standard_error, value
from .constraints import (LIMITS, PRECISION_OBJECTIVES, SERVE, Constraints, Step, check_row, passes,
                          serving_checks, steps)
from .frames import Frames, distinct, ok_rows
from .gates import fidelity_notes, energy_scope_warning, fidelity_gate
from .goodput import attach_goodput
from .goodput import wanted as goodput_wanted
from .paper_rules import paper_rule, size_warning
from .recommend_render import render_markdown, to_json

# the command's and the pipeline's entry points, with the types they pass in
__all__ = ["PRECISION_OBJECTIVES", "Constraints", "recommend", "render_markdown", "to_json"]


# --- candidate rows -------------------------------------------------------------------------------

def with_accuracy_drop(inf: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """Each serving row's relative accuracy drop against the same model's baseline precision at
    the same load point, 1 − acc/acc_base, with a delta-method interval where both have SEs.
    Rows that the aggregation already joined a drop to (``effbench.aggregate.quality``: the same
    definition, paired over the items both precisions scored) keep it: the unpaired interval here
    is only for records aggregated without per-item results."""
    if "accuracy_drop" in inf.columns and inf["accuracy_drop__source"].notna().any():
        return inf
    inf = inf.copy()
    cols: dict[str, list[Any]] = {k: [] for k in ("accuracy_drop", "accuracy_drop__missing", "accuracy_drop__source",
                                                  "accuracy_drop__ci_low", "accuracy_drop__ci_high",
                                                  "accuracy_drop__ci_n", "accuracy_drop__ci_method")}
    base = {(r["model"], r["load_point"]): r for _, r in inf.iterrows() if r["precision"] == baseline}
    for _, r in inf.iterrows():
        b = base.get((r["model"], r["load_point"]))
        a, ab = value(r, "accuracy"), (value(b, "accuracy") if b is not None else None)
        drop, why, iv = None, None, None
        if b is None:
            why = f"no {baseline} row of {r['model']} at {r['load_point']} to compare with"
        elif a is None or ab is None:
            why = "accuracy missing: " + missing_reason(r if a is None else b, "accuracy")
        elif ab <= 0:
            why = f"the baseline {baseline} scored 0"
        else:
            drop = 1 - a / ab
            se, se_b = standard_error(r, "accuracy"), standard_error(b, "accuracy")
            if r["precision"] != baseline and se is not None and se_b is not None and a > 0:
                h = spread.Z95 * spread.ratio_se(a, se, ab, se_b)
                iv = spread.Interval(drop - h, drop + h, 0, "delta_method")
        cols["accuracy_drop"].append(drop)
        cols["accuracy_drop__missing"].append(why)
        cols["accuracy_drop__source"].append(None if drop is None else f"1 - accuracy / accuracy at {baseline}")
        cols["accuracy_drop__ci_low"].append(iv.low if iv else None)
        cols["accuracy_drop__ci_high"].append(iv.high if iv else None)
        cols["accuracy_drop__ci_n"].append(None)
        cols["accuracy_drop__ci_method"].append(iv.method if iv else None)
    for k, v in cols.items():
        inf[k] = pd.Series(v, index=inf.index, dtype=object)
    for k in ("accuracy_drop", "accuracy_drop__ci_low", "accuracy_drop__ci_high"):
        inf[k] = pd.to_numeric(inf[k])
    return inf


def join_serving(pre: pd.DataFrame, inf: pd.DataFrame, baseline: str | None, load_point: str | None,
                 c: Constraints) -> pd.DataFrame:
    """Pretraining rows with the serving figures (prefixed ``serve.``) of the model exported from
    each cell: of its first precision (the baseline first) that meets every serving constraint
    the architecture step checks, else of the baseline; absent where the model was not served.
    ``inf`` holds one load point's rows, with ``accuracy_drop``."""
    pre = pre.copy()
    limits = c.limits()
    checks = [ck for ck in serving_checks("", "") if ck.constraint in limits]
    served: dict[str, pd.Series] = {}
    if len(inf) and "pretrained" in inf:
        rows = [r for _, r in inf.iterrows() if r["status"] == "ok" and not is_missing(r["pretrained"])]
        rows.sort(key=lambda r: r["precision"] != baseline)  # the baseline first, then the record order
        for cell in dict.fromkeys(r["pretrained"] for r in rows):
            own = [r for r in rows if r["pretrained"] == cell]
            meets = [r for r in own if all(passes(check_row(r, ck, limits[ck.constraint])) for ck in checks)]
            served[cell] = (meets or own)[0]
    figures = [col for col in inf.columns if "__" not in col and col != "pretrained"] if len(inf) else []
    new: dict[str, list[Any]] = {SERVE + col: [] for col in inf.columns if col != "pretrained"} if len(inf) else {}
    new.update({SERVE + col + "__missing": [] for col in figures})
    for _, r in pre.iterrows():
        s = served.get(r["cell"])
        for col in new:
            own = col.removeprefix(SERVE)
            if s is not None:
                new[col].append(s.get(own))
            elif col.endswith("__missing"):
                new[col].append(f"{r['cell']} was not served at load point {load_point}")
            else:
                new[col].append(None)
    return pd.concat([pre, pd.DataFrame(new, index=pre.index)], axis=1) if new else pre


# --- one step ---------------------------------------------------------------------------------------


def _figure(frames: Frames, step: Step, row: pd.Series) -> dict[str, Any]:
    col = step.objective[0]
    out = {"candidate": str(row[step.candidate]), "cell": str(row["cell"]),
           "record": frames.record_path(step.axis, str(row["cell"])), "objective": figure_json(row, col),
           "shown": shown(row, col)}
    served = row.get(SERVE + "cell")
    if not is_missing(served):  # the architecture step's serving evidence
        out["serving_record"] = frames.record_path("inference", str(served))
    return out


def _margin(step: Step, win: pd.Series, run: pd.Series) -> dict[str, Any]:
    col, _, better = step.objective
    a, b = value(win, col), value(run, col)
    d = (b - a) if better == LOWER else (a - b)
    ia, ib = interval(win, col), interval(run, col)
    out: dict[str, Any] = {"difference": d, "relative": d / abs(b) if b else None}  # share of the runner-up's
    if ia is None or ib is None:
        return {**out, "noise": "unknown (no interval recorded for one of the two)", "tie": False,
                "significant": None}
    se_a, se_b = standard_error(win, col), standard_error(run, col)
    return {**out, "noise": f"±{format_value(1.96 * math.hypot(se_a, se_b), 'sig2')} (95 %, combined)",
            "tie": ia.overlaps(ib), "significant": spread.significant(a, se_a, b, se_b)}


def _binding(cands: list[dict[str, Any]], limits: dict[str, float]) -> dict[str, Any] | None:
    """The constraint whose relaxation alone admits the most candidates (else the one that removes
    the most), with the best measured value it was held against."""
    names = [c for c in limits if any(ch["constraint"] == c for cand in cands for ch in cand["checks"])]
    if not names or not cands:
        return None
    scored = []
    for c in names:
        removes = [x["candidate"] for x in cands
                   if any(ch["constraint"] == c and not passes(ch) for ch in x["checks"])]
        admits = [x["candidate"] for x in cands if x["objective"]["value"] is not None
                  and all(passes(ch) for ch in x["checks"] if ch["constraint"] != c)]
        scored.append((len(admits), len(removes), c, removes, admits))
    n_admit, n_remove, c, removes, admits = max(scored, key=lambda s: (s[0], s[1]))
    measured = [(ch["value"], x["candidate"], ch) for x in cands for ch in x["checks"]
                if ch["constraint"] == c and ch["value"] is not None]
    best = None
    if measured:
        v, who, ch = (min if measured[0][2]["at_most"] else max)(measured, key=lambda m: m[0])
        best = {"value": v, "candidate": who, "label": ch["label"]}
    return {"constraint": c, "limit": limits[c], "unit": LIMITS[c], "removes": removes,
            "admits_if_relaxed": admits, "best_measured": best,
            "why": "relaxing it alone admits " + (", ".join(admits) if admits else "none")
                   + f"; it removes {n_remove} of {len(cands)}"}


def decide(frames: Frames, step: Step, rows: pd.DataFrame, c: Constraints) -> dict[str, Any]:
    """Compare one group's rows under the constraints (see the module doc)."""
    col, label, better = step.objective
    limits = c.limits()
    out: dict[str, Any] = {"objective": {"column": col, "label": label, "better": better}, "warnings": [],
                           "not_candidates": [], "candidates": []}
    for _, r in rows.iterrows():
        if r["status"] != "ok":
            detail = "" if is_missing(r.get("status_detail")) else f": {r['status_detail']}"
            out["not_candidates"].append(f"{r[step.candidate]} ({r['cell']}): status {r['status']}{detail}")
    ok = ok_rows(rows)
    n_a = [k for k in limits if not any(ck.constraint == k for ck in step.checks) and k not in step.uses]
    if n_a:
        out["not_applicable"] = n_a
    cands = []
    for _, r in ok.iterrows():
        checks = [check_row(r, ck, limits[ck.constraint]) for ck in step.checks if ck.constraint in limits]
        fig = _figure(frames, step, r)
        fig["checks"] = checks
        fig["meets"] = all(passes(ch) for ch in checks)
        if fig["objective"]["value"] is None:
            fig["excluded"] = f"{label} not measured: {fig['objective']['missing']}"
        elif not fig["meets"]:
            fig["excluded"] = "; ".join(f"{ch['label']} {_vs(ch)}" for ch in checks if not passes(ch))
        cands.append(fig)
    out["candidates"] = cands
    ranked = sorted(((r, f) for (_, r), f in zip(ok.iterrows(), cands) if "excluded" not in f),
                    key=lambda rf: value(rf[0], col) * (1 if better == LOWER else -1))
    if not cands:
        out.update(status="not measured", verdict="no ok record to choose from")
        return out
    if all(f["objective"]["value"] is None for f in cands):
        reasons = sorted({f["objective"]["missing"] for f in cands})
        out.update(status="not measured", verdict=f"{label} was not measured in any candidate: " + "; ".join(reasons))
        return out
    if not ranked:
        out["binding"] = _binding(cands, limits)
        out.update(status="nothing meets the constraints", verdict=_none_verdict(out["binding"], cands))
        return out
    win, wfig = ranked[0]
    out.update(status="chosen", choice=wfig)
    tied = [f["candidate"] for r, f in ranked[1:]
            if interval(win, col) and interval(r, col) and interval(win, col).overlaps(interval(r, col))]
    out["tied_with"] = tied
    if len(ranked) > 1:
        run, rfig = ranked[1]
        out["runner_up"] = rfig
        out["margin"] = _margin(step, win, run)
    out["verdict"] = _verdict(wfig, out, label, better)
    engines = {str(r.get(k)) for _, r in ok.iterrows() for k in ("engine", SERVE + "engine")
               if not is_missing(r.get(k))}
    if len(engines) > 1:
        out["warnings"].append("candidates were served by different engines (" + ", ".join(sorted(engines)) + "): "
                               "their latency and memory are not comparable")
    scope = energy_scope_warning(ok, [col, *(ck.column for ck in step.checks if ck.constraint in limits)])
    if scope:
        out["warnings"].append(scope)
    shared = [str(r["cell"]) for _, r in ok.iterrows() if shared_reasons(r)]  # another job, or foreign load
    if shared:
        out["warnings"].append("measured while other jobs ran (timed figures not comparable): " + ", ".join(shared))
    return out


def _vs(ch: dict[str, Any]) -> str:
    if ch["value"] is None:
        return f"unverified (not measured: {ch['reason']})"
    op = ">" if ch["at_most"] else "<"
    return f"{format_value(ch['value'], 'sig3')} {op} limit {format_value(ch['limit'], 'sig3')}"


def _verdict(w: dict[str, Any], out: dict[str, Any], label: str, better: str) -> str:
    text = f"{w['candidate']} ({label} {w['shown']})"
    m = out.get("margin")
    if m is None:
        return text + ": the only candidate that meets the constraints"
    run = out["runner_up"]
    margin = f"by {format_value(m['difference'], 'sig3')}" + (
        f" ({format_value(100 * m['relative'], 'sig2')} %)" if m["relative"] is not None else "")
    if m["tie"]:
        return (text + f", indistinguishable within noise from {', '.join(out['tied_with'])} "
                f"(runner-up {run['candidate']} {run['shown']}, {margin}; 95 % intervals overlap)")
    rest = f"; runner-up {run['candidate']} ({run['shown']}), {margin}, noise {m['noise']}"
    if out["tied_with"]:  # a candidate behind a clearly worse runner-up can still overlap the winner
        tied = ", ".join(out["tied_with"])
        return text + f", indistinguishable within noise from {tied} (95 % intervals overlap)" + rest
    return text + rest


def _none_verdict(b: dict[str, Any] | None, cands: list[dict[str, Any]]) -> str:
    if b is None:  # only candidates without the objective failed; the others have it missing
        return "nothing measured qualifies: " + "; ".join(f"{x['candidate']}: {x['excluded']}" for x in cands)
    best = b["best_measured"]
    near = (f"; best measured {best['label']}: {format_value(best['value'], 'sig3')} ({best['candidate']})"
            if best else "; no candidate has that figure measured")
    return (f"nothing measured meets the constraints; binding: {b['constraint']} = {b['limit']:g} {b['unit']}"
            f" ({b['why']}){near}")


# --- the path ---------------------------------------------------------------------------------------

def _median_params(rows: pd.DataFrame) -> float | None:
    vals = [value(r, "params_total") for _, r in rows.iterrows()]
    vals = [v for v in vals if v is not None]
    return float(pd.Series(vals).median()) if vals else None


def choose_group(df: pd.DataFrame, keys: list[str], prefer: list[str], c: Constraints,
                 what: str) -> tuple[pd.DataFrame, dict[str, str], str]:
    """The group of cells a step compares and why: the model pretrained as the architecture step
    chose, else as its best-ranked architecture measured here (``prefer``: pretraining cells, best
    first), else the group nearest ``model_params`` (log scale), else the one with the most ok cells."""
    groups = list(df.groupby(keys, sort=False)) if len(df) else []
    if not groups:
        return df.iloc[0:0], {}, f"no {what} records"

    def key_of(k: Any) -> dict[str, str]:
        return dict(zip(keys, (str(v) for v in (k if isinstance(k, tuple) else (k,)))))

    for rank, cell in enumerate(prefer):
        hits = [(k, g) for k, g in groups if "pretrained" in g and str(g.iloc[0]["pretrained"]) == cell]
        if hits:
            k, g = max(hits, key=lambda kg: len(ok_rows(kg[1])))
            why = ("the architecture step's choice" if rank == 0 else
                   f"the best-ranked architecture measured here (the choice {prefer[0]} was not)")
            return g, key_of(k), f"{why}: pretrained = {cell}"
    note = f"no model pretrained as {prefer[0]} measured here; " if prefer else ""
    if c.model_params:
        sized = [(k, g, _median_params(g)) for k, g in groups if _median_params(g)]
        if sized:
            k, g, p = min(sized, key=lambda kgp: abs(math.log(kgp[2] / c.model_params)))
            return g, key_of(k), note + (f"nearest measured size to model_params "
                                         f"{format_value(c.model_params, 'params')}: {format_value(p, 'params')}")
    k, g = max(groups, key=lambda kg: (len(ok_rows(kg[1])), _median_params(kg[1]) or 0))
    return g, key_of(k), note + "the group with the most ok cells" + (f" (of {len(groups)})" if len(groups) > 1 else "")


def _ranked_cells(res: dict[str, Any]) -> list[str]:
    """The architecture step's candidates best first: the choice, the others that qualified by
    their objective, then the rest (a later step follows the first it has measured)."""
    col = res.get("objective", {})
    sign = 1 if col.get("better") == LOWER else -1
    cands = res.get("candidates", [])
    good = sorted((x for x in cands if "excluded" not in x), key=lambda x: sign * x["objective"]["value"])
    return [x["cell"] for x in good]


def recommend(frames: Frames, c: Constraints) -> dict[str, Any]:
    """The whole answer as a JSON-ready dict (render it with :func:`render_markdown`)."""
    lp = c.load_point or frames.table_load_point
    inf = with_accuracy_drop(frames.inference, frames.baseline) if len(frames.inference) else frames.inference
    points = inf  # every load point: goodput under the SLOs asked may be proven at any (.goodput)
    if len(inf):
        inf = inf[inf["load_point"] == lp]
        if c.model:
            inf = inf[inf["model"].astype(str) == c.model]
    every = inf  # every precision at the load point, a failing one too
    if len(inf) and c.precision:
        inf = inf[inf["precision"].astype(str) == c.precision]
    inf, failed = fidelity_gate(inf, c.allow_fidelity_fail)
    if goodput_wanted(c) and len(inf):
        inf = attach_goodput(points, inf, c)
    pre, ft = frames.pretrain, frames.finetune
    if c.technique and len(pre):
        pre = pre[pre["technique"].astype(str) == c.technique]
    if c.model and len(ft):
        ft = ft[ft["model"].astype(str) == c.model]
    pre = join_serving(pre, inf, frames.baseline, lp, c)
    tables = {"pretrain": (pre, ["size"]), "finetune": (ft, ["model", "task"]),
              "inference": (inf, ["model"])}
    answer: dict[str, Any] = {"constraints": {k: v for k, v in asdict(c).items()}, "load_point": lp,
                              "baseline": frames.baseline, "results": str(frames.results),
                              "left_out": [asdict(x) for x in frames.left_out],
                              "fidelity": {"allow_fidelity_fail": c.allow_fidelity_fail, "failed": failed},
                              "steps": []}
    ranked: list[str] = []  # the architecture step's qualifying cells, best first
    for step in steps(c.precision_objective):
        df, keys = tables[step.axis]
        # Fine-tuning and serving follow the chosen architecture where its model was measured.
        rows, group, why = choose_group(df, keys, ranked if step.axis != "pretrain" else [], c, step.axis)
        res = decide(frames, step, rows, c) if len(rows) else {
            "status": "not measured", "verdict": f"no {step.axis} records in {frames.results}", "candidates": [],
            "warnings": [], "objective": {"column": step.objective[0], "label": step.objective[1],
                                          "better": step.objective[2]}}
        params = _median_params(rows) if len(rows) else None
        far = size_warning(c, df, step.axis)
        if far:
            res["warnings"].insert(0, far)
        paper_rows = rows
        if step.axis == "inference":
            fidelity_notes(res, failed)
            # the paper's int4 rule is judged on the measured drop, a failing int4's too
            paper_rows = every[every["model"].astype(str) == group["model"]] if group.get("model") else rows
        paper = paper_rule(step.name, c, paper_rows, params, frames.baseline, res.get("choice", {}).get("candidate"))
        others = [g for g in distinct(df[keys[0]])] if len(df) else []
        answer["steps"].append({"step": step.name, "question": step.question, "axis": step.axis, "group": group,
                                "group_why": why, "groups_measured": others, "model_params": params,
                                **res, "paper": paper})
        if step.name == "architecture":
            ranked = _ranked_cells(res)
    return answer


