"""The page's first screen: the run's findings against the paper's headline claims
(:mod:`.findings`), the recommendation for the config's constraints (``decision/recommend.md``,
a document section), and what is flagged, each linking to the rows and sections behind it."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..aggregate.scopes import MIXED_MARK, distinct_scopes
from ..aggregate.tables import FALLBACK_MARK, SHARED_MARK, SHORT_MARK
from ..fidelity.table import FIDELITY_MARK
from .findings import AGREES, DISAGREES, TIE, Finding, findings, row_anchor
from .inputs import ReportInputs, Section, StageInput
from .runinfo import failure_rows

if TYPE_CHECKING:
    from .render import Page

VERDICT_CLASS = {AGREES: "v-agrees", DISAGREES: "v-disagrees", TIE: "v-tie"}
_STEP = re.compile(r"^##\s+(?P<step>[^:]+):")
_ANSWER = re.compile(r"^\*\*Answer: (?P<answer>.+?)\.\*\*$|^\*\*(?P<status>[^:*]+):\*\* (?P<why>.+)$")


def stage_tables(stages: list[StageInput]) -> dict[str, pd.DataFrame]:
    """Every aggregated table the manifests name (main and extra), by file stem, as written."""
    out: dict[str, pd.DataFrame] = {}
    for st in stages:
        for rel in [st.manifest["tables"].get("csv"), *(x.get("csv") for x in st.manifest.get("extra_tables", []))]:
            p = st.path(rel) if rel else None
            if p is not None and p.is_file():
                out[Path(rel).stem] = pd.read_csv(p)
    return out


def recommendation(sections: list[Section]) -> tuple[int, Path, list[tuple[str, str]]] | None:
    """(section index, recommend.md, [(step, answer)]) from the section that carries recommend.md."""
    for i, sec in enumerate(sections, 1):
        for f in sec.files:
            if f.name == "recommend.md" and f.is_file():
                steps: list[tuple[str, str]] = []
                step = None
                for line in f.read_text().splitlines():
                    if m := _STEP.match(line):
                        step = m.group("step").strip()
                    elif step and (m := _ANSWER.match(line.strip())):
                        steps.append((step, m.group("answer") or f"{m.group('status')}: {m.group('why')}"))
                        step = None
                return i, f, steps
    return None


def _rows_links(f: Finding, ids: set[str]) -> str:
    links = []
    for stem, cell in dict.fromkeys(f.rows):
        a = row_anchor(stem, cell)
        links.append(f'<a href="#{a}">{html.escape(cell)}</a>' if a in ids else html.escape(cell))
    return ", ".join(links)


def findings_table(found: list[Finding], ids: set[str]) -> str:
    rows = []
    for f in found:
        cls = VERDICT_CLASS.get(f.verdict, "v-na")
        detail = html.escape("\n".join([*f.evidence, "Rule: " + f.rule]))
        rows.append(f'<tr><td>{html.escape(f.claim)}</td><td><span class="v {cls}">{html.escape(f.verdict)}</span>'
                    f'</td><td title="{detail}">{html.escape(f.summary)}'
                    # two lines of evidence here; all of it, with the rule, on hover
                    + (f"<br><small>{'<br>'.join(html.escape(e) for e in f.evidence[:2])}"
                       + (f" (+{len(f.evidence) - 2} more on hover)" if len(f.evidence) > 2 else "") + "</small>"
                       if f.evidence else "")
                    + f"</td><td>{_rows_links(f, ids) or '–'}</td></tr>")
    return ('<table id="findings"><thead><tr><th>The paper says</th><th>This run</th><th>Evidence (95 % '
            "intervals; overlapping intervals are a tie)</th><th>Rows</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _tasks_at_chance(tables: dict[str, pd.DataFrame]) -> tuple[int, int, int]:
    """(tasks × model × precision not measurable, all of them, of those in Perf)."""
    t = tables.get("inference_tasks")
    if t is None or not len(t) or "measurable" not in t.columns:
        return 0, 0, 0
    no = t["measurable"].astype(str).str.lower().isin(("false", "no"))
    perf = t["in_perf"].astype(str).str.lower().isin(("true", "yes")) if "in_perf" in t.columns else no & False
    return int(no.sum()), len(t), int((no & perf).sum())


def flags_line(page: Page, inputs: ReportInputs, tables: dict[str, pd.DataFrame], ids: set[str]) -> str:
    rows = failure_rows(inputs)
    flagged = rows["flagged"]

    def n(mark: str) -> int:
        return sum(1 for x in flagged if str(x["flag"]).startswith(f"[{mark}]"))

    def cells(mark: str) -> str:
        got = [str(x["cell"]) for x in flagged if str(x["flag"]).startswith(f"[{mark}]")]
        return (": " + ", ".join(html.escape(c) for c in got[:6]) + (" …" if len(got) > 6 else "")) if got else ""

    chance, tasks, in_perf = _tasks_at_chance(tables)
    mixed = [stem for stem, t in tables.items()
             if "energy_scope" in t.columns and len(distinct_scopes(t["energy_scope"])) > 1]
    link = '<a href="#failures">details</a>'
    parts = [f"<b>[{SHARED_MARK}]</b> not measured alone: {n(SHARED_MARK)}{cells(SHARED_MARK)}",
             f"<b>[{FALLBACK_MARK}]</b> fallback engine: {n(FALLBACK_MARK)}{cells(FALLBACK_MARK)}",
             f"<b>[{SHORT_MARK}]</b> short energy window: {n(SHORT_MARK)}",
             f"<b>[{FIDELITY_MARK}]</b> fidelity failures: {n(FIDELITY_MARK)}{cells(FIDELITY_MARK)}",
             f"runs OOM/failed: {len(rows['failed'])}"]
    if mixed:  # energy of different counters side by side in one table: flagged in its notes
        parts.append(f"<b>[{MIXED_MARK}]</b> tables whose energy figures count different hardware: "
                     + ", ".join(html.escape(m) for m in mixed))
    if tasks:
        t_link = next((i for i in ids if i.startswith("inference-inference-tasks")), None)
        what = f"tasks at chance (not measurable): {chance} of {tasks} task × model × precision rows" + (
            f", {in_perf} in Perf" if in_perf else "")
        parts.append(f'<a href="#{t_link}">{what}</a>' if t_link else what)
    return "<p><b>Flagged</b> (" + link + "): " + " · ".join(parts) + ".</p>"


def recommendation_line(page: Page, inputs: ReportInputs, anchors: dict[int, str]) -> str:
    rec = recommendation(inputs.sections)
    if rec is None:
        return "<p><b>Recommendation</b>: none given to the report (decision/recommend.md).</p>"
    i, _, steps = rec
    said = "; ".join(f"{html.escape(s)}: <b>{html.escape(a)}</b>" for s, a in steps) or "no step answered"
    link = f' (<a href="#{anchors[i]}">why, and the paper\'s rules</a>)' if i in anchors else ""
    return f"<p><b>Recommendation for the config's constraints</b>: {said}{link}.</p>"


def headline_section(page: Page, inputs: ReportInputs, ids: set[str], doc_anchors: dict[int, str]
                     ) -> tuple[str, list[Finding]]:
    """The headline section's HTML (``ids``: the ids already on the page, for the row links) and
    the findings it shows."""
    tables = stage_tables(inputs.stages)
    found = findings(tables)
    out = [f'<section id="{page.anchor("headline")}"><h2>Headline: this run against the paper\'s claims</h2>',
           recommendation_line(page, inputs, doc_anchors),
           findings_table(found, ids),
           flags_line(page, inputs, tables, ids),
           "</section>"]
    return "\n".join(out), found
