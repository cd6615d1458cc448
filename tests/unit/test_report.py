"""The report page (effbench.report): built from real aggregations of real records, its
Markdown rendering, captions, failures and document sections. The page in a real browser:
tests/workflow/test_report_browser.py."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from test_aggregate import CELLS, make_record

from effbench.aggregate.stage import aggregate_stage
from effbench.report.cli import main as report_main
from effbench.report.inputs import Section, collect
from effbench.report.markdown import Resolver, inline, to_html
from effbench.report.render import render, write_report

EVIL = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretraining aggregation: four ok cells (one without AEC, two with intervals) and one OOM,
    written where the pipeline writes it (results/, manifests beside tables/, plots/). Made once:
    the tests only add files of their own beside it."""
    tmp_path = tmp_path_factory.mktemp("report")
    rec = tmp_path / "records"
    intervals = {("xs", "gqa"): {"al_s_per_iter": (0.12, 0.14)}, ("xs", "mqa"): {"al_s_per_iter": (0.125, 0.135)}}
    paths = [make_record(rec, s, t, i, metrics=m, intervals=intervals.get((s, t)))
             for i, ((s, t), m) in enumerate(CELLS.items())]
    paths.append(make_record(rec, "xs", "moe", 9, status="oom"))
    out = tmp_path / "results"
    aggregate_stage("pretrain", paths, out)
    return out


def _page(results: Path, sections: list[Section] | None = None) -> str:
    page = results / "report.html"
    write_report(collect([results / "pretrain.manifest.json"], sections, json.dumps({"seed": 1}), "c" * 64), page)
    return page.read_text()


def _hrefs(text: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', text)]


def _ids(text: str) -> set[str]:
    return set(re.findall(r'id="([^"]*)"', text))


def assert_links_resolve(text: str, page: Path) -> None:
    ids = _ids(text)
    for h in _hrefs(text):
        if h.startswith("#"):
            assert h[1:] in ids, h
        elif h.startswith("data:"):
            assert len(h) > 40, h
        else:
            assert "://" not in h, h
            assert (page.parent / unquote(h)).is_file(), h


# --- markdown ----------------------------------------------------------------------------------


def test_markdown_escapes_raw_html_and_renders_tables_lists_and_emphasis() -> None:
    md = f"# Title\n\nSome **bold** and *it* and `code <b>`.\n\n- one\n- two {EVIL}\n\n| a | b \\| c |\n|---|---:|\n| 1 | 2 |\n"
    out = to_html(md, Resolver(heading_offset=1))
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert '<h2 id="title">Title</h2>' in out
    assert "<strong>bold</strong>" in out and "<em>it</em>" in out and "<code>code &lt;b&gt;</code>" in out
    assert "<ul><li>one</li>" in out
    assert inline("a<br>b <br/> c <b>", Resolver()) == "a<br>b <br> c &lt;b&gt;"  # only line breaks kept
    assert "<th style=\"text-align:right\">b | c</th>" in out and '<td style="text-align:right">2</td>' in out


def test_markdown_links_only_what_the_resolver_accepts_and_prefixes_anchors() -> None:
    r = Resolver(link=lambda t: "ok.csv" if t == "tables/x.csv" else None, anchor_prefix="s-")
    out = inline("[x](tables/x.csv) [y](missing.csv) [z](#part) [w](https://example.org)", r)
    assert '<a href="ok.csv">x</a>' in out and '<a href="#s-part">z</a>' in out
    assert "missing.csv" not in out and "example.org" not in out and out.count("<a ") == 2


def test_markdown_headings_get_unique_ids() -> None:
    r = Resolver()
    out = to_html("### xs\n\ntext\n\n### xs\n", r)
    assert 'id="xs"' in out and 'id="xs-2"' in out


# --- the page ----------------------------------------------------------------------------------


def test_the_page_embeds_every_plot_and_links_only_to_what_exists(results: Path) -> None:
    text = _page(results)
    manifest = json.loads((results / "pretrain.manifest.json").read_text())
    assert manifest["plots"]  # the fixture draws plots
    imgs = re.findall(r'<img src="([^"]*)"', text)
    assert len(imgs) == len(manifest["plots"]) and all(s.startswith("data:image/png;base64,") for s in imgs)
    # One script, the page's own (inline): nothing is loaded from anywhere.
    assert text.count("<script") == 1 and "<script src" not in text and "<link" not in text and 'src="http' not in text
    assert_links_resolve(text, results / "report.html")
    for p in manifest["plots"]:
        assert f'download="{Path(p["svg"]).name}"' in text  # the SVG travels inside the page


class _Rows(HTMLParser):
    """The cell texts of the first table in an HTML fragment, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(text: str, table_id: str) -> list[list[str]]:
    i = text.index(f'id="{table_id}"')
    p = _Rows()
    p.feed(text[i:text.index("</table>", i)])
    return p.rows


def test_the_raw_table_is_the_csv_as_written(results: Path) -> None:
    rows = table_rows(_page(results), "pretrain-main-raw")
    csv = pd.read_csv(results / "tables" / "pretrain.csv", dtype=str, keep_default_na=False)
    assert rows[0] == list(csv.columns)
    assert rows[1:] == csv.values.tolist() and len(rows) == 1 + len(CELLS) + 1  # the OOM row too


def test_captions_name_each_figures_source_and_noise(results: Path) -> None:
    text = html.unescape(_page(results))
    caption = text[text.index('id="glossary"'):text.index('id="failures"')]  # once, for every table
    assert "AMU (GB)" in caption and "time-averaged memory used" in caption  # the schema's doc of amu_gb
    assert "psutil_rss" in caption and "rapl" in caption  # the records' __source values
    assert "t_repeats" in caption and "n = 5" in caption and "(2 of 4 ok runs)" in caption  # AL's intervals
    assert "no interval recorded" in caption  # PPL has none here
    assert "not measured in any run" in caption  # MFU
    assert "[S]" in caption and "[F]" in caption and "[E]" in caption


def test_failures_list_the_oom_cell_the_points_left_out_and_the_na_reasons(results: Path) -> None:
    text = html.unescape(_page(results))
    failures = text[text.index('id="failures"'):text.index('id="run"')]
    assert "xs/moe" in failures and "oom" in failures and "CUDA out of memory at micro-batch 1" in failures
    assert "AEC (W) vs" not in failures or "xs/mla" in failures  # the plot point without AEC, with why
    assert "xs/mla" in failures and "NVML Shared Library Not Found" in failures
    assert "no dense peak known for this CPU" in failures  # MFU's n/a reason


def test_provenance_and_config_are_on_the_page(results: Path) -> None:
    text = html.unescape(_page(results))
    run = text[text.index('id="run"'):]
    assert "devbox" in run and "v0.1-test" in run and "Test CPU (cpu)" in run
    assert "seed: 1" in run and "c" * 64 in run


def test_a_record_made_under_another_config_is_flagged(results: Path) -> None:
    page = results / "report.html"
    write_report(collect([results / "pretrain.manifest.json"], [], None, "d" * 64), page)
    assert "made under another config" in page.read_text()


def test_document_sections_render_markdown_embed_plots_and_show_csv_and_json(results: Path) -> None:
    doc = results / "decision"
    plots = results / "plots" / "decision"
    doc.mkdir()
    plots.mkdir(parents=True)
    png = next((results / "plots").glob("*.png"))
    for name in ("front", "extra"):
        (plots / f"{name}.png").write_bytes(png.read_bytes())
    (plots / "front.svg").write_text((results / "plots" / png.with_suffix(".svg").name).read_text())
    (doc / "pareto.md").write_text(f"# Pareto fronts\n\n{EVIL}\n\n![front](../plots/decision/front.png)\n\n"
                                   "See [the csv](pareto.csv) and [gone](nothing.csv) and [top](#pareto-fronts).\n")
    (doc / "pareto.csv").write_text("cell,amu_gb\nxs/gqa,44.87\n")
    (doc / "recommend.json").write_text(json.dumps({"answer": "xs/mqa", "note": EVIL}))
    text = _page(results, [Section("Decision", [doc / "pareto.md", doc / "pareto.csv", doc / "recommend.json",
                                                plots])])
    section = text[text.index('id="doc-1-decision"'):text.index('id="glossary"')]
    assert "<script>" not in section and "&lt;script&gt;" in section
    assert section.count("<img ") == 2  # front (in the Markdown) and extra (from the folder), once each
    assert 'download="front.svg"' in section
    assert "xs/gqa" in section and "44.87" in section and "recommend.json" in section
    assert 'href="decision/pareto.csv"' in section and " gone " in section and "nothing.csv" not in section
    assert 'href="#doc-1-decision-pareto-pareto-fronts"' in section
    assert_links_resolve(text, results / "report.html")
    assert 'href="#doc-1-decision"' in text  # in the contents


def test_a_missing_document_file_is_said_not_linked(results: Path) -> None:
    text = _page(results, [Section("Decision", [results / "decision" / "recommend.md"])])
    assert "recommend.md (absent)" in text or "recommend.md is missing" in text
    assert_links_resolve(text, results / "report.html")


def test_the_command_line_writes_the_page(results: Path) -> None:
    out = results / "report.html"
    assert report_main(["--out", str(out), "--manifests", str(results / "pretrain.manifest.json"),
                        "--section", "Notes", str(results / "tables" / "pretrain.md"),
                        "--config-json", '{"seed": 7}', "--config-hash", "h"]) == 0
    text = out.read_text()
    assert "<!DOCTYPE html>" in text and "seed: 7" in text and 'id="doc-1-notes"' in text


def test_rendering_is_deterministic(results: Path) -> None:
    inputs = collect([results / "pretrain.manifest.json"])
    assert render(inputs, results / "report.html") == render(inputs, results / "report.html")
