"""The report page: one HTML file that leads with the answer (the headline: the run's findings
against the paper's claims, the recommendation, what is flagged), then every stage's tables
(sortable, filterable, grouped columns), leaderboards and plots (hover a point for its figures),
the document sections other rules hand in, the glossary (each column's definition, source and
noise, once), what failed or was skipped, and the run's config and provenance (collapsed).
Self-contained: images are data: URIs, the style and the small script are inline and nothing is
fetched; links go to anchors of the page or to files beside it that exist when it is built."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import write_text
from . import captions
from .datatable import split_notes, spec_table
from .embed import IMAGE_SUFFIXES, figure, file_link, relative_link
from .glossary import glossary_section, header_doc, short_caption
from .headline import headline_section
from .inputs import ReportInputs, Section, StageInput, spec_for_table
from .markdown import Resolver, inline, slug, to_html
from .runinfo import failures_section, run_section
from .script import SCRIPT, STYLE

TITLE = "EfficientLLM benchmark: report"


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


def table_block(page: Page, stage: StageInput, rels: dict[str, str], title: str, caption: str, ident: str,
                spec: Any = None) -> str:
    """A table: its title, a one-line caption, the table (a stage table grouped and with row ids,
    from its spec; others as their Markdown), its notes collapsed, the raw CSV, the files."""
    head, table, raw = (page.anchor(ident + x) for x in ("", "-table", "-raw"))  # before the Markdown's own ids
    md = stage.path(rels["md"])
    if not md.is_file():
        body = f'<p class="absent">{html.escape(str(md))} is missing.</p>'
    else:
        before, lines, after = split_notes(md.read_text())
        r = page.resolver(md, ident + "-")
        docs = {c.column: header_doc(c.column) for c in spec.columns} if spec is not None else {}
        csv = stage.path(rels["csv"]) if "csv" in rels else None
        shown = (spec_table(lines, spec, csv, Path(rels["md"]).stem, table, r, docs) if spec is not None and lines
                 else f'<div id="{table}">' + to_html("\n".join(lines), r) + "</div>")
        notes = "\n".join(after).strip()
        body = (to_html("\n".join(before), r) + shown
                + (f"<details><summary>Notes under the table</summary>{to_html(notes, r)}</details>" if notes else ""))
    return "\n".join([
        f'<h3 id="{head}">{html.escape(title)}</h3>',
        _caption(page, caption),
        body,
        raw_table(stage.path(rels["csv"]), raw) if "csv" in rels else "",
        _files(page, stage, rels),
    ])


def _plot(page: Page, stage: StageInput, plot: dict[str, Any]) -> str:
    ident = page.anchor(f"plot-{plot['name']}")
    png = stage.path(plot["png"]) if plot.get("png") else None
    svg = stage.path(plot["svg"]) if plot.get("svg") else None
    return (f'<figure id="{ident}">{figure(png, svg, plot["title"], page.path, plot.get("points"))}'
            f'<figcaption><strong>{html.escape(plot["title"])}</strong>'
            f'{_caption(page, captions.plot_caption(stage, plot))}</figcaption></figure>')


def stage_section(page: Page, stage: StageInput) -> str:
    m, s = stage.manifest, stage.stage
    prov = m.get("provenance", {})
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(prov.get("statuses", {}).items())) or "none"
    runs = stage.table_records()
    out = [
        f'<section><h2 id="{page.anchor("stage-" + s)}">{html.escape(m["title"])}</h2>',
        f"<p>{prov.get('runs', 0)} runs ({html.escape(statuses)}) in {m['rows']} rows. "
        f"Manifest: {file_link(Path(m['_path']), page.path)}.</p>",
        table_block(page, stage, m["tables"], "Table", short_caption(stage, stage.spec, len(runs), m["tables"]["csv"]),
                    f"{s}-main", stage.spec),
    ]
    for x in m.get("extra_tables", []):
        spec = spec_for_table(s, x["csv"])
        rels = {k: v for k, v in x.items() if k in ("md", "csv", "tex")}
        caption = (short_caption(stage, spec, len(stage.records), x["csv"]) if spec is not None
                   else captions.extra_table_caption(stage, x, spec))
        out.append(table_block(page, stage, rels, x["title"], caption, f"{s}-{slug(Path(x['csv']).stem)}", spec))
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



def render(inputs: ReportInputs, page_path: Path) -> str:
    """The whole page, as text: the headline first (built last: it links the rows the tables
    carry), then the stages, the document sections, the glossary, failures and provenance."""
    page = Page(page_path)
    body = [stage_section(page, s) for s in inputs.stages]
    doc_anchors = {i: page.anchor(f"doc-{i}-{slug(sec.title)}") for i, sec in enumerate(inputs.sections, 1)}
    body += [document_section(page, sec, i) for i, sec in enumerate(inputs.sections, 1)]
    body += [glossary_section(page, inputs.stages), failures_section(page, inputs), run_section(page, inputs)]
    ids = set(re.findall(r'id="([^"]+)"', "\n".join(body)))
    headline, _ = headline_section(page, inputs, ids, doc_anchors)
    toc = [("stage-" + s.stage, s.manifest["title"]) for s in inputs.stages]
    toc += [(f"doc-{i}-{slug(sec.title)}", sec.title) for i, sec in enumerate(inputs.sections, 1)]
    toc += [("glossary", "Glossary: columns, sources, noise and marks"), ("failures", "Failed, skipped and flagged"),
            ("run", "The run: config and provenance")]
    nav = "<nav><details><summary>Contents</summary><ul>" + "".join(
        f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in toc) + "</ul></details></nav>"
    stages = ", ".join(s.stage for s in inputs.stages) or "none"
    intro = (f"<p>Stages: {html.escape(stages)}. Tables sort (click a header) and filter; hover a plot point for "
             f"its figures and intervals. {inline('How to read it: `docs/report.md`, `docs/noise.md`.', Resolver())}"
             "</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{TITLE}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{TITLE}</h1>\n{headline}\n{intro}\n{nav}\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_report(inputs: ReportInputs, out: Path | str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render(inputs, out))
    return out
