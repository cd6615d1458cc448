"""The report page: one HTML file with every stage's tables, leaderboards and plots (each with
its caption), the document sections other rules hand in, the run's config and provenance, and
what failed, was skipped or is flagged. Self-contained: images are data: URIs, the style is
inline, there is no script; links go to anchors of the page or to files beside it that exist
when it is built."""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..aggregate.frame import is_missing
from ..aggregate.summary import merge_provenance
from ..aggregate.tables import shared_reasons
from ..atomic import write_text
from . import captions
from .embed import IMAGE_SUFFIXES, figure, file_link, relative_link
from .inputs import ReportInputs, Section, StageInput, spec_for_table
from .markdown import Resolver, inline, slug, to_html

TITLE = "EfficientLLM benchmark: report"
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
h1,h2,h3,h4{line-height:1.2}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2.5em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ccc;padding:.2em .45em}
th{background:#f3f3f3;text-align:left}td{vertical-align:top}.scroll{overflow-x:auto}
.caption{background:#f8f8fb;border-left:4px solid #99b;padding:.4em .9em;margin:.6em 0;font-size:.9em}
.caption p{margin:.35em 0}.caption ul{margin:.2em 0}img{max-width:100%;height:auto;display:block}
figure{margin:1.2em 0}.files{font-size:.85em;color:#555}.absent{color:#a00}
details{margin:.4em 0}summary{cursor:pointer;color:#335}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
nav ul{columns:2}code{font-size:.92em}
"""


class Page:
    """The page being built: where it will live (links are relative to it) and its anchors."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.anchors: set[str] = set()

    def resolver(self, source: Path, prefix: str, offset: int = 1) -> Resolver:
        """How a Markdown file's links and images become page content: a file that exists beside
        ``source`` is linked relative to the page (an image is embedded); others stay text."""

        def link(target: str) -> str | None:
            if "://" in target or target.startswith(("mailto:", "data:")):
                return None  # the page is offline: no links off the machine
            p = (source.parent / target.split("#", 1)[0]).resolve()
            return relative_link(p, self.path) if p.is_file() else None

        def image(src: str, alt: str) -> str:
            p = (source.parent / src).resolve()
            png, svg = p.with_suffix(".png"), p.with_suffix(".svg")
            return figure(png if png.is_file() else None, svg if svg.is_file() else None, alt or p.stem, self.path)

        return Resolver(link=link, image=image, anchor_prefix=prefix, heading_offset=offset, anchors=self.anchors)

    def markdown_file(self, path: Path, prefix: str, offset: int = 1) -> str:
        if not path.is_file():
            return f'<p class="absent">{html.escape(str(path))} is missing.</p>'
        return to_html(path.read_text(), self.resolver(path, prefix, offset))

    def markdown(self, text: str, prefix: str = "") -> str:
        """Markdown written for this page (captions): links relative to the page's folder."""
        return to_html(text, self.resolver(self.path, prefix))

    def anchor(self, ident: str) -> str:
        self.anchors.add(ident)
        return ident


def raw_table(csv: Path, table_id: str) -> str:
    """A CSV exactly as written (every cell its text: the numbers equal the file's), escaped."""
    if not csv.is_file():
        return f'<p class="absent">{html.escape(csv.name)} is missing.</p>'
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    body = df.to_html(index=False, escape=True, border=0, table_id=table_id, classes="raw")
    return (f"<details><summary>Raw numbers: {html.escape(csv.name)} ({len(df)} rows)</summary>"
            f'<div class="scroll">{body}</div></details>')


def _caption(page: Page, text: str) -> str:
    return f'<div class="caption">{page.markdown(text)}</div>'


def _files(page: Page, stage: StageInput, rels: dict[str, str]) -> str:
    return '<p class="files">Files: ' + " · ".join(file_link(stage.path(r), page.path) for r in rels.values()) + "</p>"


def table_block(page: Page, stage: StageInput, rels: dict[str, str], title: str, caption: str, ident: str) -> str:
    """A table: its title, caption, the Markdown as aggregated, the raw CSV, the files."""
    head, table, raw = (page.anchor(ident + x) for x in ("", "-table", "-raw"))  # before the Markdown's own ids
    return "\n".join([
        f'<h3 id="{head}">{html.escape(title)}</h3>',
        _caption(page, caption),
        f'<div id="{table}">' + page.markdown_file(stage.path(rels["md"]), ident + "-") + "</div>",
        raw_table(stage.path(rels["csv"]), raw) if "csv" in rels else "",
        _files(page, stage, rels),
    ])


def _plot(page: Page, stage: StageInput, plot: dict[str, Any]) -> str:
    ident = page.anchor(f"plot-{plot['name']}")
    png = stage.path(plot["png"]) if plot.get("png") else None
    svg = stage.path(plot["svg"]) if plot.get("svg") else None
    return (f'<figure id="{ident}">{figure(png, svg, plot["title"], page.path)}'
            f'<figcaption><strong>{html.escape(plot["title"])}</strong>'
            f'{_caption(page, captions.plot_caption(stage, plot))}</figcaption></figure>')


def stage_section(page: Page, stage: StageInput) -> str:
    m, s = stage.manifest, stage.stage
    prov = m.get("provenance", {})
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(prov.get("statuses", {}).items())) or "none"
    out = [
        f'<section><h2 id="{page.anchor("stage-" + s)}">{html.escape(m["title"])}</h2>',
        f"<p>{prov.get('runs', 0)} runs ({html.escape(statuses)}) in {m['rows']} rows. "
        f"Manifest: {file_link(Path(m['_path']), page.path)}.</p>",
        table_block(page, stage, m["tables"], "Table",
                    captions.table_caption(stage, stage.spec, stage.table_records(), m["tables"]["csv"]), f"{s}-main"),
    ]
    for x in m.get("extra_tables", []):
        spec = spec_for_table(s, x["csv"])
        rels = {k: v for k, v in x.items() if k in ("md", "csv", "tex")}
        out.append(table_block(page, stage, rels, x["title"], captions.extra_table_caption(stage, x, spec),
                               f"{s}-{slug(Path(x['csv']).stem)}"))
    out.append(table_block(page, stage, m["leaderboard"], "Leaderboard", captions.leaderboard_caption(stage),
                           f"{s}-leaderboard"))
    out.append(f'<h3 id="{page.anchor(s + "-plots")}">Plots</h3>')
    out += [_plot(page, stage, p) for p in m.get("plots", [])] or ["<p>No plots were drawn.</p>"]
    if m.get("skipped"):
        out.append("<p>Not drawn:</p><ul>" + "".join(
            f"<li>{html.escape(x.get('title', x['name']))}: {html.escape(x['reason'])}</li>" for x in m["skipped"])
            + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _plot_pairs(files: list[Path]) -> list[tuple[Path | None, Path | None]]:
    """Images by stem: (PNG, SVG) pairs in the order first seen."""
    pairs: dict[Path, list[Path | None]] = {}
    for f in files:
        pair = pairs.setdefault(f.with_suffix(""), [None, None])
        pair[0 if f.suffix.lower() == ".png" else 1] = f
    return [(p[0], p[1]) for p in pairs.values()]


def document_section(page: Page, section: Section, index: int) -> str:
    """A section handed in by another rule: Markdown rendered (its images embedded), plots not
    shown by it embedded after it, CSV files as tables, JSON as text."""
    ident = page.anchor(f"doc-{index}-{slug(section.title)}")
    out = [f'<section><h2 id="{ident}">{html.escape(section.title)}</h2>']
    files = section.expanded()
    shown: set[Path] = set()
    for f in files:
        if f.suffix.lower() == ".md":
            text = f.read_text() if f.is_file() else ""
            shown |= {(f.parent / src).resolve().with_suffix("")
                      for src in _image_sources(text)}
            out.append(page.markdown_file(f, f"{ident}-{slug(f.stem)}-", offset=2))  # its '#' under the section's h2
            out.append(f'<p class="files">From {file_link(f, page.path)}.</p>')
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and f.resolve().with_suffix("") not in shown]
    for png, svg in _plot_pairs(images):
        name = (png or svg).stem  # type: ignore[union-attr]
        out.append(f'<figure id="{page.anchor(ident + "-" + slug(name))}">{figure(png, svg, name, page.path)}'
                   f"<figcaption>{html.escape(name)}</figcaption></figure>")
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".csv":
            out.append(f"<p>{file_link(f, page.path)}</p>" + raw_table(f, page.anchor(f"{ident}-{slug(f.stem)}-raw")))
        elif suffix == ".json" and f.is_file():
            text = json.dumps(json.loads(f.read_text()), indent=2)
            out.append(f"<details><summary>{html.escape(f.name)}</summary><pre>{html.escape(text)}</pre></details>"
                       f'<p class="files">{file_link(f, page.path)}</p>')
        elif suffix not in (".md", ".csv", ".json", *IMAGE_SUFFIXES) or not f.exists():
            out.append(f'<p class="files">{file_link(f, page.path)}</p>')
    out.append("</section>")
    return "\n".join(out)


def _image_sources(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)


# --- run: config, provenance, failures -----------------------------------------------------------


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
    out = [f'<section><h2 id="{page.anchor("run")}">The run: config and provenance</h2>',
           "<p>Where and with what the records were made (from each record's provenance columns, merged "
           "over the stage manifests).</p>", _frame_table(rows, ["", "value"])]
    others = [h for h in prov["config_hashes"] if inputs.config_hash and h != inputs.config_hash]
    if others:
        out.append(f'<p class="absent">Some records were made under another config than this run\'s '
                   f"({html.escape(', '.join(h[:12] for h in others))}): their settings may differ from those "
                   "shown below.</p>")
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
    out.append("</section>")
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


def failures_section(page: Page, inputs: ReportInputs) -> str:
    """Every run that did not finish ok, every record left out, every plot or point not drawn,
    and every row flagged as not comparable, each with why."""
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
    out = [f'<section><h2 id="{page.anchor("failures")}">Failed, skipped and flagged</h2>']
    parts = (("Runs that did not finish ok (status oom or failed)", failed, ["stage", "cell", "status", "why"]),
             ("Records left out (aggregate.skip_bad_records) or unreadable", left_out, ["stage", "cell", "file", "why"]),
             ("Plots and points not drawn", not_drawn, ["stage", "what", "why"]),
             ("Figures not measured (n/a in the tables)", na, ["stage", "table", "why"]),
             ("Rows flagged as not comparable", flagged, ["stage", "cell", "flag", "why"]))
    for title, rows, cols in parts:
        out.append(f"<h3>{html.escape(title)}</h3>")
        out.append(_frame_table(rows, cols) if rows else "<p>None.</p>")
    out.append("</section>")
    return "\n".join(out)


def render(inputs: ReportInputs, page_path: Path) -> str:
    """The whole page, as text."""
    page = Page(page_path)
    body = [run_section(page, inputs), failures_section(page, inputs)]
    body += [stage_section(page, s) for s in inputs.stages]
    body += [document_section(page, sec, i) for i, sec in enumerate(inputs.sections, 1)]
    toc = [("run", "The run: config and provenance"), ("failures", "Failed, skipped and flagged")]
    toc += [("stage-" + s.stage, s.manifest["title"]) for s in inputs.stages]
    toc += [(f"doc-{i}-{slug(sec.title)}", sec.title) for i, sec in enumerate(inputs.sections, 1)]
    nav = "<nav><h2>Contents</h2><ul>" + "".join(
        f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in toc) + "</ul></nav>"
    stages = ", ".join(s.stage for s in inputs.stages) or "none"
    intro = (f"<p>Every table, leaderboard and plot of this run's stages ({html.escape(stages)}), each with what "
             "it measures, where its figures come from and their noise; the run's config and provenance; what "
             f"failed or was skipped and why. {inline('How to read it: `docs/report.md`, `docs/noise.md`.', Resolver())}"
             "</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{TITLE}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{TITLE}</h1>\n{intro}\n{nav}\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_report(inputs: ReportInputs, out: Path | str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render(inputs, out))
    return out
