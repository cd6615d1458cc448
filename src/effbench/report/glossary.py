"""Captions once: every column of every stage table defined in one place (what it measures, which
direction is better, where its values come from and how its interval was made, per stage), with
the marks and the ``value ± h`` convention; the tables carry a one-line caption and link here, and
each column header carries its definition as a tooltip."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from ..aggregate.specs import StageSpec
from . import captions
from .inputs import StageInput, spec_for_table
from .markdown import slug

if TYPE_CHECKING:
    from .render import Page


def column_id(column: str) -> str:
    return "col-" + slug(column)


def header_doc(column: str) -> str:
    """A column header's tooltip: the record schema's doc (or the join's source), short."""
    doc = captions.DOCS.get(column) or (captions.JOINED[column][0] if column in captions.JOINED else "")
    return doc


def short_caption(stage: StageInput, spec: StageSpec, n_records: int, csv_rel: str) -> str:
    """A table's caption: what a row is, where the rows come from; the columns are in the glossary."""
    keys = ", ".join(spec.key_headers)
    runs = stage.table_records() if spec is stage.spec else stage.records
    scope = captions.table_energy_scope(spec, runs)  # what the energy columns counted, beside them
    return (f"One row per cell ({keys}); a cell run several times shows the median of its ok runs. "
            f"{n_records} records, aggregated into `{csv_rel}`. `value ± h`: h is the 95 % interval's half-width. "
            "Each column's definition, source and noise, and the marks: [glossary](#glossary) "
            "(or hover a column's header)." + (f"\n\n{scope}" if scope else ""))


def _specs(stage: StageInput) -> list[tuple[StageSpec, object]]:
    out: list[tuple[StageSpec, object]] = [(stage.spec, stage.table_records())]
    for x in stage.manifest.get("extra_tables", []):
        spec = spec_for_table(stage.stage, x["csv"])
        if spec is not None:
            out.append((spec, stage.records))
    return out


def glossary_section(page: Page, stages: list[StageInput]) -> str:
    """One entry per column (first header seen), then per stage its source and noise."""
    entries: dict[str, dict[str, object]] = {}
    for st in stages:
        for spec, runs in _specs(st):
            for c in spec.columns:
                e = entries.setdefault(c.column, {"header": c.header, "better": c.better, "where": []})
                src = captions.column_source(spec.stage, c.column, runs)  # type: ignore[arg-type]
                noise = captions.column_noise(spec.stage, c.column, runs) if c.metric else ""  # type: ignore[arg-type]
                line = f"{spec.title}: source {src}" + (f"; noise {noise}" if noise else "")
                if line not in e["where"]:  # type: ignore[operator]
                    e["where"].append(line)  # type: ignore[union-attr]
    items = []
    for col, e in entries.items():
        better = f" ({e['better']} is better)" if e["better"] else ""
        where = "".join(f"<li>{page.markdown(w)}</li>" for w in e["where"])  # type: ignore[union-attr]
        items.append(f'<dt id="{page.anchor(column_id(col))}">{html.escape(str(e["header"]))}{better} '
                     f"<code>{html.escape(col)}</code></dt><dd>{page.markdown(header_doc(col) or col)}"
                     f"<ul>{where}</ul></dd>")
    return "\n".join([
        f'<section><h2 id="{page.anchor("glossary")}">Glossary: columns, sources, noise and marks</h2>',
        '<div class="caption">' + page.markdown(
            "**Noise.** `value ± h`: h is the half-width of the figure's 95 % interval (docs/noise.md); a figure "
            "without one shows its value alone. Ranks in the leaderboards and the headline's verdicts treat "
            "overlapping intervals as ties. " + captions.MARKS) + "</div>",
        "<details><summary>Every column: its definition, and per stage its source and noise "
        f"({len(entries)} columns)</summary>",
        '<dl class="glossary">' + "".join(items) + "</dl></details></section>",
    ])
