"""The run's config and provenance, and what failed, was skipped or is flagged: the page's last
sections (the answer comes first). :func:`failure_rows` is shared with the headline, which counts
the flags and links here."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from ..aggregate.frame import is_missing
from ..aggregate.summary import merge_provenance
from ..aggregate.tables import shared_reasons
from . import captions
from .inputs import ReportInputs, StageInput

if TYPE_CHECKING:
    from .render import Page

def _frame_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    return '<div class="scroll">' + pd.DataFrame(rows, columns=columns).to_html(
        index=False, escape=True, border=0, na_rep="–") + "</div>"


def _library_versions(stages: list[StageInput]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for st in stages:
        for v in st.records.get("library_versions_json", []):
            if is_missing(v):
                continue
            for lib, ver in json.loads(v).items():
                seen[(st.stage, lib)].add("absent" if ver is None else str(ver))
    return [{"stage": s, "library": lib, "versions": ", ".join(sorted(v))} for (s, lib), v in sorted(seen.items())]


def run_section(page: Page, inputs: ReportInputs) -> str:
    prov = merge_provenance([s.manifest for s in inputs.stages])
    span = f"{prov['started_first']} to {prov['ended_last']}" if prov["started_first"] else "no runs"
    rows = [{"": label, "value": ", ".join(prov[key]) or "–"} for label, key in (
        ("Hosts", "hosts"), ("Devices", "devices"), ("Drivers", "drivers"), ("Code versions", "code_versions"),
        ("Config hashes of the records", "config_hashes"), ("Slurm jobs", "slurm_jobs"))]
    rows.append({"": "Runs", "value": span})
    rows.append({"": "Config hash of this run", "value": inputs.config_hash or "not given"})
    out = [f'<section><h2 id="{page.anchor("run")}">The run: config and provenance</h2>']
    others = [h for h in prov["config_hashes"] if inputs.config_hash and h != inputs.config_hash]
    if others:  # said outside the collapsed part: it changes how every figure reads
        out.append(f'<p class="absent">Some records were made under another config than this run\'s '
                   f"({html.escape(', '.join(h[:12] for h in others))}): their settings may differ from those "
                   "shown below.</p>")
    out += ["<details><summary>Hosts, devices, code versions, config hashes, stages, library versions and the "
            "config</summary>", "<p>Where and with what the records were made (from each record's provenance "
            "columns, merged over the stage manifests).</p>", _frame_table(rows, ["", "value"])]
    stage_rows = [{"stage": s.stage, "runs": s.manifest.get("provenance", {}).get("runs", 0),
                   "statuses": ", ".join(f"{n} {k}" for k, n in sorted(
                       s.manifest.get("provenance", {}).get("statuses", {}).items())),
                   "rows": s.manifest.get("rows"), "manifest": Path(s.manifest["_path"]).name} for s in inputs.stages]
    out += ["<h3>Stages</h3>", _frame_table(stage_rows, ["stage", "runs", "statuses", "rows", "manifest"])]
    libs = _library_versions(inputs.stages)
    if libs:
        out += ["<details><summary>Library versions recorded by the runs</summary>",
                _frame_table(libs, ["stage", "library", "versions"]), "</details>"]
    if inputs.config is not None:
        text = yaml.safe_dump(inputs.config, sort_keys=False, allow_unicode=True)
        out += ["<details><summary>The config (validated, defaults filled)</summary>",
                f"<pre>{html.escape(text)}</pre></details>"]
    out.append("</details></section>")
    return "\n".join(out)


def fidelity_failures(stage: StageInput) -> dict[tuple[str, str], str]:
    """(model, precision) -> why, for each precision the stage's fidelity table (an extra table,
    tables/fidelity.csv) says failed its fidelity check; empty without one or without verdicts."""
    entry = next((x for x in stage.manifest.get("extra_tables", []) if x.get("title") == captions.FIDELITY_TITLE), None)
    csv = stage.path(entry["csv"]) if entry and entry.get("csv") else None
    if csv is None or not csv.is_file():
        return {}
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "verdict" not in df.columns:
        return {}
    th = [c for c in df.columns if c.startswith("threshold_")]
    out = {}
    for _, x in df[df["verdict"] == "fail"].iterrows():
        limits = ", ".join(f"{c.removeprefix('threshold_')}={x[c]}" for c in th if x[c])
        out[(x["model"], x["precision"])] = (x.get("verdict_reason") or "a threshold missed") + (
            f" (thresholds: {limits})" if limits else "")
    return out


def failure_rows(inputs: ReportInputs) -> dict[str, list[dict[str, Any]]]:
    """Every run that did not finish ok, every record left out, every plot or point not drawn,
    every figure not measured and every row flagged as not comparable, each with why."""
    failed, left_out, not_drawn, flagged, na = [], [], [], [], []
    for st in inputs.stages:
        r, m = st.records, st.manifest
        for _, x in (r[r["status"] != "ok"] if len(r) else r).iterrows():
            failed.append({"stage": st.stage, "cell": x["cell"], "status": x["status"], "why": x.get("status_detail")})
        left_out += [{"stage": st.stage, "cell": x["cell"], "file": x["path"], "why": x["reason"]}
                     for x in m.get("left_out", [])]
        listed = {x["path"] for x in m.get("left_out", [])}
        left_out += [{"stage": st.stage, "cell": "", "file": path, "why": why}
                     for path, why in st.unreadable if path not in listed]
        not_drawn += [{"stage": st.stage, "what": x.get("title", x["name"]), "why": x["reason"]}
                      for x in m.get("skipped", [])]
        not_drawn += [{"stage": st.stage, "what": f"{p['title']}: point {pt.split(' (', 1)[0]}",
                       "why": pt.split(" (", 1)[-1].rstrip(")")} for p in m.get("plots", []) for pt in p.get("left_out", [])]
        na += [{"stage": st.stage, "table": m["tables"]["md"], "why": why} for why in m.get("missing_reasons", [])]
        unfaithful = fidelity_failures(st)
        for _, x in r.iterrows():
            shared = shared_reasons(x)  # another effbench job, or foreign load on the host
            if shared:
                flagged.append({"stage": st.stage, "cell": x["cell"], "flag": f"[{captions.SHARED_MARK}] not alone",
                                "why": "; ".join(shared)})
            if "engine_fallback" in r.columns and not is_missing(x["engine_fallback"]):
                flagged.append({"stage": st.stage, "cell": x["cell"], "flag": f"[{captions.FALLBACK_MARK}] fallback",
                                "why": f"{x['engine_fallback']} (engine: {x.get('engine')})"})
            if "energy_window_short" in r.columns and not is_missing(x["energy_window_short"]) \
                    and bool(x["energy_window_short"]):
                flagged.append({"stage": st.stage, "cell": x["cell"], "flag": f"[{captions.SHORT_MARK}] short window",
                                "why": "fewer than 20 energy-counter updates in the measured window"})
            why = unfaithful.get((str(x.get("model")), str(x.get("precision"))))
            if why:
                flagged.append({"stage": st.stage, "cell": x["cell"],
                                "flag": f"[{captions.FIDELITY_MARK}] fidelity: fail", "why": why})
    return {"failed": failed, "left_out": left_out, "not_drawn": not_drawn, "na": na, "flagged": flagged}


def failures_section(page: Page, inputs: ReportInputs) -> str:
    rows = failure_rows(inputs)
    out = [f'<section><h2 id="{page.anchor("failures")}">Failed, skipped and flagged</h2>']
    parts = (("Runs that did not finish ok (status oom or failed)", "failed", ["stage", "cell", "status", "why"]),
             ("Records left out (aggregate.skip_bad_records) or unreadable", "left_out",
              ["stage", "cell", "file", "why"]),
             ("Plots and points not drawn", "not_drawn", ["stage", "what", "why"]),
             ("Figures not measured (n/a in the tables)", "na", ["stage", "table", "why"]),
             ("Rows flagged as not comparable", "flagged", ["stage", "cell", "flag", "why"]))
    for title, key, cols in parts:
        out.append(f'<h3 id="{page.anchor("failures-" + key.replace("_", "-"))}">{html.escape(title)}</h3>')
        out.append(_frame_table(rows[key], cols) if rows[key] else "<p>None.</p>")
    out.append("</section>")
    return "\n".join(out)
