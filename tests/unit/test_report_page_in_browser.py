"""The report page in a real headless Chromium (Playwright), built from a small hand-made results
tree (a real pretraining aggregation of hand-made records, and a recommendation file): the
headline is on the first screen (1280×800), sorting a column reorders its rows, a filter hides
rows, plot points carry hover text, and the page makes no network request. The same page from
the minimal pipeline run: tests/workflow/test_report_browser.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_aggregate import make_record

from effbench.aggregate.stage import aggregate_stage
from effbench.report.inputs import Section, collect
from effbench.report.render import write_report

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: run bash scripts/setup.sh")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing "
                                                   "(apt-get install -y chromium)")]

# (ppl, amu, al, tt, aec) and 95 % intervals: MQA best on memory and latency, MLA lowest PPL, MoE the most memory.
METRICS = {
    ("xs", "gqa"): (8.09, 44.87, 0.1283, 2.0e-4, 300.0),
    ("xs", "mqa"): (8.23, 42.24, 0.1100, 2.0e-4, 280.0),
    ("xs", "mla"): (7.79, 52.93, 0.2537, 1.0e-4, 310.0),
    ("xs", "moe"): (8.30, 70.10, 0.1900, 1.5e-4, 330.0),
    ("s", "gqa"): (7.10, 76.53, 0.4000, 0.5e-4, 450.0),
}
RECOMMEND = """# Recommendation from the measured records

Constraints: none.

## Architecture: which attention variant?

**Answer: mla.**

## Precision: which precision?

**Not measured:** no serving records.
"""


def _intervals(m: tuple) -> dict[str, tuple[float, float]]:
    ppl, amu, al = m[:3]
    return {"ppl": (ppl - 0.05, ppl + 0.05), "amu_gb": (amu - 0.3, amu + 0.3), "al_s_per_iter": (al * 0.98, al * 1.02)}


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("browser")
    paths = [make_record(tmp / "records", s, t, i, metrics=m, intervals=_intervals(m))
             for i, ((s, t), m) in enumerate(METRICS.items())]
    results = tmp / "results"
    aggregate_stage("pretrain", paths, results)
    (results / "decision").mkdir()
    (results / "decision" / "recommend.md").write_text(RECOMMEND)
    page_file = results / "report.html"
    write_report(collect([results / "pretrain.manifest.json"],
                         [Section("Recommendation for the config's constraints", [results / "decision" / "recommend.md"])],
                         json.dumps({"seed": 1}), "c" * 64), page_file)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_file.as_uri(), wait_until="load")
            out: dict = {"errors": errors}
            out["headline"] = page.locator("#headline").bounding_box()
            out["findings"] = page.locator("#findings").bounding_box()
            out["headline_text"] = page.locator("#headline").inner_text()
            rows = "() => Array.from(document.querySelectorAll('#pretrain-main-table tbody tr'))" \
                   ".filter(r => !r.hidden).map(r => r.id)"
            out["rows_before"] = page.evaluate(rows)
            ppl = page.locator("#pretrain-main-table th[data-col=ppl]")
            ppl.click()
            out["rows_asc"] = page.evaluate(rows)
            ppl.click()
            out["rows_desc"] = page.evaluate(rows)
            page.select_option("select[aria-label='filter by Size']", "s")
            out["rows_filtered"] = page.evaluate(rows)
            points = page.locator("figure .plot svg.hover circle")
            out["n_points"] = points.count()
            out["titles"] = page.evaluate("() => Array.from(document.querySelectorAll('.plot svg.hover circle title'))"
                                          ".map(t => t.textContent)")
            first = points.first
            first.scroll_into_view_if_needed()
            first.hover(force=True)
            out["tip"] = page.locator("#tip").inner_text() if page.locator("#tip").is_visible() else None
            out["long_hidden"] = not page.locator("#pretrain-main-table th.long").first.is_visible() \
                if page.locator("#pretrain-main-table th.long").count() else None
        finally:
            browser.close()
    out["requests"] = [u for u in requests if not u.startswith(("file:", "data:"))]
    out["manifest"] = json.loads((results / "pretrain.manifest.json").read_text())
    return out


def test_the_headline_is_on_the_first_screen(seen: dict) -> None:
    assert seen["errors"] == []
    box, findings = seen["headline"], seen["findings"]
    assert box is not None and box["y"] < 800 and findings["y"] + findings["height"] <= 800, (box, findings)
    text = seen["headline_text"]
    assert "MQA has the best memory–latency trade-off" in text and "Architecture: mla" in text
    assert "agrees" in text and "not measurable here" in text  # pretrain claims judged; serving ones not


def test_sorting_a_column_reorders_the_rows(seen: dict) -> None:
    before, asc, desc = seen["rows_before"], seen["rows_asc"], seen["rows_desc"]
    assert sorted(before) == sorted(asc) and asc != before
    by_ppl = sorted(METRICS, key=lambda k: METRICS[k][0])
    assert asc == [f"row-pretrain-{s}-{t}" for s, t in by_ppl]
    assert desc == asc[::-1]


def test_a_filter_hides_rows(seen: dict) -> None:
    assert seen["rows_filtered"] == ["row-pretrain-s-gqa"]


def test_plot_points_carry_hover_text(seen: dict) -> None:
    ok_points = sum(len(METRICS) for _ in seen["manifest"]["plots"])
    assert seen["n_points"] == ok_points
    assert any(t.startswith("xs/mqa") and "AMU (GB): 42.24 [41.94, 42.54] (95 %)" in t for t in seen["titles"])
    assert sum("on the Pareto front" in t for t in seen["titles"]) >= len(seen["manifest"]["plots"])
    assert seen["tip"] and seen["tip"].split("\n")[0] in {f"{s}/{t}" for s, t in METRICS}


def test_long_columns_are_behind_a_toggle(seen: dict) -> None:
    assert seen["long_hidden"] is True  # Context: a descriptive column, hidden until asked for


def test_the_page_makes_no_network_request(seen: dict) -> None:
    assert seen["requests"] == []
