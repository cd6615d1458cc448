"""``recommend``'s answer as Markdown (``recommend.md``, the command's default output) and as JSON
(``recommend.json``); the answer's fields are documented in docs/decision.md."""

from __future__ import annotations

import json
from typing import Any

from ..aggregate.specs import LOWER
from ..aggregate.tables import format_value
from .constraints import LIMITS, passes
from .goodput import FLOORS, slo_line


def _fmt_limit(k: str, v: Any) -> str:
    return f"{k} = {v:g} {LIMITS[k]}" if k in LIMITS else f"{k} = {v}"


def render_markdown(a: dict[str, Any]) -> str:
    c = a["constraints"]
    set_ = [_fmt_limit(k, v) for k, v in c.items() if v is not None and k in LIMITS]
    lines = ["# Recommendation from the measured records", "",
             "Constraints: " + ("; ".join(set_) if set_ else "none") + ". "
             + (f"Model size asked: {format_value(c['model_params'], 'params')}. " if c.get("model_params") else "")
             + ("Asked about only: " + ", ".join(f"{k} = {c[k]}" for k in ("technique", "model", "precision")
                                                 if c.get(k)) + ". "
                if any(c.get(k) for k in ("technique", "model", "precision")) else "")
             + (slo_line(c) if any(c.get(k) is not None for k in FLOORS) else "")
             + f"Serving load point: {a['load_point'] or 'n/a'}; baseline precision: {a['baseline'] or 'n/a'}; "
             f"precision objective: {c['precision_objective']}. Records: `{a['results']}`. "
             "Method, and what a tie means: docs/decision.md.", ""]
    for s in a["steps"]:
        lines += [f"## {s['step'].capitalize()}: {s['question']}", ""]
        where = ", ".join(f"{k} = {v}" for k, v in s["group"].items()) or "–"
        lines.append(f"**Answer: {s['verdict']}.**" if s["status"] == "chosen"
                     else f"**{s['status'].capitalize()}:** {s['verdict']}.")
        lines += ["", f"Compared: {where} ({s['group_why']}). Objective: {s['objective']['label']} "
                      f"({'lower' if s['objective']['better'] == LOWER else 'higher'} is better)."]
        if s["step"] == "architecture":
            lines.append("Serving figures of a technique are its model's at the first precision (the baseline first) "
                         "that meets the serving constraints and the accuracy drop, else the baseline's; `served:` "
                         "names that record.")
        if s.get("not_applicable"):
            lines.append("Not checked at this step (they apply to another): " + ", ".join(s["not_applicable"]) + ".")
        if s["candidates"]:
            lines += ["", _evidence_table(s)]
        for n in s.get("not_candidates", []):
            lines.append(f"- not a candidate: {n}")
        for w in s.get("warnings", []):
            lines.append(f"- warning: {w}")
        p = s["paper"]
        if p["agrees"] is not None:
            said = f"says {p['says']}; the measured answer {'agrees' if p['agrees'] else 'disagrees'}."
        else:
            said = ("names nothing here." if p["says"] is None
                    else f"says {p['says']}; it cannot be compared (nothing chosen).")
        lines += ["", f"The paper's rule ({p['rule']}) {said} {p.get('premise', '')}".rstrip(), ""]
    if a["left_out"]:
        lines += ["Records left out: " + "; ".join(f"{x['cell']} — {x['reason']}" for x in a["left_out"]), ""]
    return "\n".join(lines)


def _evidence_table(s: dict[str, Any]) -> str:
    limits = list(dict.fromkeys(ch["label"] for x in s["candidates"] for ch in x["checks"]))
    head = ("| Candidate | Record | " + s["objective"]["label"] + " | " + " | ".join(limits)
            + (" | " if limits else "") + "Verdict |")
    rows = [head, "|---|---|---:|" + "---:|" * len(limits) + "---|"]
    win = s.get("choice", {}).get("candidate")
    for x in s["candidates"]:
        by = {ch["label"]: ch for ch in x["checks"]}
        cells = []
        for lab in limits:
            ch = by.get(lab)
            cells.append("–" if ch is None else ("n/a" if ch["value"] is None else format_value(ch["value"], "sig3"))
                         + ("" if ch is None else (" ✓" if passes(ch) else " ✗")))
        tied = x["candidate"] in s.get("tied_with", [])
        verdict = ("**chosen**" if x["candidate"] == win else "tied within noise" if tied
                   else x.get("excluded", "meets; worse objective"))
        record = f"`{x['record']}`" + (f", served: `{x['serving_record']}`" if x.get("serving_record") else "")
        rows.append(f"| {x['candidate']} | {record} | {x['shown']} | " + " | ".join(cells)
                    + (" | " if cells else "") + f"{verdict} |")
    src = sorted({x["objective"].get("source") or "" for x in s["candidates"]} - {""})
    return "\n".join(rows) + ("\n\nSources of the objective: " + ", ".join(src) + "." if src else "")


def to_json(a: dict[str, Any]) -> str:
    return json.dumps(a, indent=2, default=lambda o: None if o is None else str(o)) + "\n"
