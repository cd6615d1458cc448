"""The summary page, built from stage manifests only.

``<out>/summary.md`` opens with the answer: links to the report (``report.html``) and the
recommendation (``decision/recommend.md``), and the run's headline findings against the paper's
claims (effbench.report.findings, from the aggregated tables the manifests name). It then links
every table, leaderboard and plot of every stage given, embeds
the Markdown tables and leaderboards, lists the bad records left out on request and the
plots that were not drawn and why, and
ends with a provenance block (hosts, devices, code versions, config hashes, time span).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import write_text
from ..record import STAGES


def read_manifest(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    m = json.loads(path.read_text())
    m["_dir"] = str(path.parent)
    m["_path"] = str(path)
    return m


def _link(m: dict[str, Any], rel: str, out: Path) -> str:
    """A path from the manifest (relative to its folder) as a link relative to ``out``."""
    target = Path(m["_dir"]) / rel
    return Path(os.path.relpath(target.resolve(), out.resolve())).as_posix()


def _demote(md: str, levels: int) -> str:
    return "\n".join(("#" * levels + line) if line.startswith("#") else line for line in md.splitlines())


def _embed(m: dict[str, Any], rel: str) -> str:
    p = Path(m["_dir"]) / rel
    return _demote(p.read_text().rstrip(), 2) if p.is_file() else f"*({rel} is missing)*"


def merge_provenance(manifests: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        k: set() for k in ("hosts", "devices", "drivers", "code_versions", "config_hashes", "slurm_jobs")
    }
    starts, ends = [], []
    for m in manifests:
        p = m.get("provenance", {})
        for k, values in merged.items():
            values.update(p.get(k, []))
        if p.get("started_first"):
            starts.append(p["started_first"])
        if p.get("ended_last"):
            ends.append(p["ended_last"])
    out = {k: sorted(v) for k, v in merged.items()}
    out["started_first"] = min(starts) if starts else None  # ISO-8601 UTC strings sort as times
    out["ended_last"] = max(ends) if ends else None
    return out


def _tables(manifests: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The aggregated tables the manifests name (main and extra), by file stem."""
    out: dict[str, pd.DataFrame] = {}
    for m in manifests:
        for rel in [m["tables"].get("csv"), *(x.get("csv") for x in m.get("extra_tables", []))]:
            p = Path(m["_dir"]) / rel if rel else None
            if p is not None and p.is_file():
                out[p.stem] = pd.read_csv(p)
    return out


def _headline(manifests: list[dict[str, Any]], out: Path) -> list[str]:
    """Where the answer is (the report, the recommendation: both written after this page, by the
    report and decision rules) and the headline findings."""
    from ..report.findings import findings  # the report's claims logic; imported here: it imports aggregate

    def link(rel: str) -> str:  # linked once it exists: this page may be written before the rules that write it
        return f"[{rel}]({rel})" if (out / rel).is_file() else f"`{rel}`"

    lines = [f"**Start here:** {link('report.html')} (the whole run on one page: findings, sortable tables, "
             f"plots with hover) · {link('decision/recommend.md')} (the recommendation for the config's "
             f"constraints) · {link('decision/pareto.md')}.", "",
             "## Headline: this run against the paper's claims", "",
             "| The paper says | This run | Evidence (95 % intervals; overlapping intervals are a tie) |",
             "|---|---|---|"]
    for f in findings(_tables(manifests)):
        ev = "<br>".join([f.summary, *f.evidence])
        lines.append(f"| {f.claim} | **{f.verdict}** | {ev.replace('|', '/')} |")
    return lines + ["", "Rules of each verdict: docs/report.md.", ""]


def render_summary(manifests: list[dict[str, Any]], out: Path) -> str:
    order = {s: i for i, s in enumerate(STAGES)}
    manifests = sorted(manifests, key=lambda m: order.get(m["stage"], len(order)))
    lines = ["# EfficientLLM benchmark: summary", ""]
    lines += _headline(manifests, out)
    lines.append("Stages: " + ", ".join(f"[{m['stage']}](#{m['stage']})" for m in manifests) + ".")
    lines += ["", "## Contents", ""]
    for m in manifests:
        t, lb = m["tables"], m["leaderboard"]
        links = " · ".join(f"[{ext}]({_link(m, t[ext], out)})" for ext in ("md", "csv", "tex"))
        parts = [f"table {links}"]
        parts.append(f"leaderboard [md]({_link(m, lb['md'], out)}) · [csv]({_link(m, lb['csv'], out)})")
        for x in m.get("extra_tables", []):
            parts.append(f"{x['title']} [md]({_link(m, x['md'], out)}) · [csv]({_link(m, x['csv'], out)})")
        for p in m["plots"]:
            parts.append(f"{p['title']} [png]({_link(m, p['png'], out)}) · [svg]({_link(m, p['svg'], out)})")
        lines.append(f"- **{m['stage']}** ({m['rows']} rows): " + "; ".join(parts))
    for m in manifests:
        prov = m.get("provenance", {})
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(prov.get("statuses", {}).items()))
        lines += ["", f'<a id="{m["stage"]}"></a>', "", f"## {m['title']}", ""]
        manifest = _link(m, Path(m["_path"]).name, out)
        lines.append(f"{prov.get('runs', 0)} runs ({statuses or 'none'}) in {m['rows']} rows; [manifest]({manifest}).")
        if m.get("left_out"):
            lines += ["", "**Left out** (bad records, skipped on request: `aggregate.skip_bad_records`):", ""]
            lines += [f"- {x['cell']} — {x['reason']} (`{x['path']}`)" for x in m["left_out"]]
        lines += ["", "### Table", "", _embed(m, m["tables"]["md"])]
        for x in m.get("extra_tables", []):
            lines += ["", f"### {x['title']}", "", _embed(m, x["md"])]
        lines += ["", "### Leaderboard", "", _embed(m, m["leaderboard"]["md"])]
        lines += ["", "### Pareto plots", ""]
        if not m["plots"]:
            lines.append("No plots were drawn.")
        for p in m["plots"]:
            lines += [
                f"![{m['stage']}: {p['title']}]({_link(m, p['png'], out)})",
                "",
                f"{p['title']} ([svg]({_link(m, p['svg'], out)}))",
            ]
            if p.get("left_out"):
                lines += ["", "Left out of this plot: " + "; ".join(p["left_out"]) + "."]
            lines.append("")
        if m["skipped"]:
            lines += ["", "Not drawn:", ""]
            lines += [f"- {s['title']}: {s['reason']}" for s in m["skipped"]]
    prov = merge_provenance(manifests)
    span = f"{prov['started_first']} to {prov['ended_last']}" if prov["started_first"] else "no runs"
    lines += ["", "## Provenance", ""]
    lines += ["| | |", "|---|---|"]
    for label, key in (
        ("Hosts", "hosts"),
        ("Devices", "devices"),
        ("Drivers", "drivers"),
        ("Code versions", "code_versions"),
        ("Config hashes", "config_hashes"),
        ("Slurm jobs", "slurm_jobs"),
    ):
        vals = prov[key]
        lines.append(f"| {label} | " + (", ".join(f"`{v}`" for v in vals) if vals else "–") + " |")
    lines.append(f"| Runs | {span} |")
    lines.append("| Manifests | " + ", ".join(f"`{m['stage']}.manifest.json`" for m in manifests) + " |")
    return "\n".join(lines) + "\n"


def write_summary(manifest_paths: Iterable[Path | str], out: Path | str) -> Path:
    """Write ``<out>/summary.md`` from the given stage manifests; return its path."""
    out = Path(out)
    manifests = [read_manifest(p) for p in manifest_paths]
    out.mkdir(parents=True, exist_ok=True)
    target = out / "summary.md"
    write_text(target, render_summary(manifests, out))
    return target
