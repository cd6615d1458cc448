"""The report page of the minimal pipeline run (the shared `pipeline` fixture: no pipeline of its
own) opened in a real headless Chromium driven by Playwright: it renders, every image loads,
every link resolves, and the numbers of the pretraining table equal the records, read straight
from their Parquet files.

Chromium is Debian's (`apt-get install chromium`, done by scripts/test.sh when root); Playwright
comes from envs/driver.lock.txt and drives it without a browser download of its own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest
from workflow_helpers import needs_stage_envs

from effbench.aggregate.specs import PRETRAIN
from effbench.aggregate.tables import format_with_interval

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: run bash scripts/setup.sh")
pytestmark = [
    needs_stage_envs,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: scripts/test.sh installs Debian's "
                                                     "chromium when run as root (apt-get install -y chromium)"),
]

# Every image, link and table cell as the browser sees them (after layout and image decoding).
IMAGES = "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"
LINKS = "Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))"
IDS = "Array.from(document.querySelectorAll('[id]')).map(e => e.id)"
ROWS = """id => Array.from(document.getElementById(id).querySelectorAll('tr:not(.groups)'))
            .map(r => Array.from(r.querySelectorAll('th,td')).map(c => c.textContent.trim()))"""


@pytest.fixture(scope="module")
def report(pipeline):
    """(results folder, what the browser read from its report page)."""
    _, config, _ = pipeline
    results = Path(config["results"])
    page_file = results / "report.html"
    assert page_file.is_file(), "the pipeline wrote no report.html"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            seen = {
                "title": page.title(),
                "h1": page.locator("h1").inner_text(),
                "sections": page.locator("section h2").all_inner_texts(),
                "images": page.evaluate(IMAGES),
                "links": page.evaluate(LINKS),
                "ids": set(page.evaluate(IDS)),
                "raw": page.evaluate(ROWS, "pretrain-main-raw"),
                "table": page.evaluate(ROWS, "pretrain-main-table"),
                "errors": errors,
                "failed": failed,
            }
        finally:
            browser.close()
    return results, seen


def test_the_page_renders_every_section(report):
    _, seen = report
    assert seen["title"] == seen["h1"] == "EfficientLLM benchmark: report"
    assert seen["errors"] == [] and seen["failed"] == []
    for title in ("The run: config and provenance", "Failed, skipped and flagged", PRETRAIN.title):
        assert title in seen["sections"], seen["sections"]
    assert len(seen["sections"]) >= 6  # run, failures and the four stages of the minimal pipeline


def test_every_image_loads(report):
    results, seen = report
    images = seen["images"]
    plots = sum(len(json.loads(m.read_text())["plots"]) for m in results.glob("*.manifest.json"))
    assert plots >= 4 and len(images) == plots, images  # one image per plot the aggregations drew
    bad = [i for i in images if not i["complete"] or i["width"] <= 0]
    assert not bad, bad


def test_every_link_resolves(report):
    page_dir, seen = report
    assert seen["links"]
    for href in seen["links"]:
        if href.startswith("#"):
            assert href[1:] in seen["ids"], href
        elif href.startswith("data:"):
            assert ";base64," in href and len(href) > 100, href[:80]
        else:
            assert "://" not in href, href  # offline: nothing off the machine
            assert (page_dir / unquote(href)).is_file(), href


def _record(results: Path, cell: str) -> dict:
    (row,) = pq.read_table(results / "pretrain" / cell / "record.parquet").to_pylist()
    return row


def test_the_pretraining_numbers_equal_the_records(report):
    results, seen = report
    raw, table = seen["raw"], seen["table"]
    header, rows = raw[0], raw[1:]
    cells = json.loads((results / "pretrain.manifest.json").read_text())["cells"]
    assert [dict(zip(header, r))["cell"] for r in rows] == cells and len(cells) >= 2  # the minimal run: mqa, moe
    figures = [c.column for c in PRETRAIN.columns if c.fmt != "str"]
    for cells in rows:
        row = dict(zip(header, cells))
        rec = _record(results, row["cell"])
        assert row["status"] == rec["status"] == "ok"
        for col in figures + [f + s for f in figures for s in ("__ci_low", "__ci_high") if f + s in header]:
            value = rec[col]
            if value is None:
                assert row[col] == "", col
            else:  # the CSV keeps the record's float exactly (shortest round-trip text)
                assert float(row[col]) == value or (math.isnan(value) and math.isnan(float(row[col]))), col
    # The formatted table shows the same figures, each as the aggregation prints the record's value.
    t_header, t_rows = table[0], table[1:]
    for cells in t_rows:
        row = dict(zip(t_header, cells))
        rec = _record(results, f"{row['Size'].split(' [')[0]}/{row['Method']}")
        for c in PRETRAIN.columns:
            if rec[c.column] is None:
                continue
            shown = format_with_interval(rec[c.column], rec.get(c.column + "__ci_low"),
                                         rec.get(c.column + "__ci_high"), c.fmt)
            assert row[c.header].split(" [")[0] == shown, (c.header, row[c.header], shown)
