"""The answer first: the report's headline (findings, recommendation, flags) above everything,
linking the table rows behind each finding; summary.md opening with the same findings and links;
plots that say where their points are (hover), keep their legend off the points, keep close
labels apart and mark fallback-served points [F]."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_aggregate import make_record

from effbench.aggregate.plotpoints import place_labels
from effbench.aggregate.serving import throughput_latency_plot
from effbench.aggregate.stage import aggregate_stage
from effbench.aggregate.summary import write_summary
from effbench.report.inputs import Section, collect
from effbench.report.render import write_report

METRICS = {("xs", "gqa"): (8.09, 44.87, 0.1283, 2.0e-4, 300.0), ("xs", "mla"): (7.79, 52.93, 0.2537, 1.0e-4, 310.0)}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("headline")
    paths = [make_record(tmp / "records", s, t, i, metrics=m,
                         intervals={"ppl": (m[0] - 0.01, m[0] + 0.01)}) for i, ((s, t), m) in enumerate(METRICS.items())]
    out = tmp / "results"
    aggregate_stage("pretrain", paths, out)
    (out / "decision").mkdir()
    (out / "decision" / "recommend.md").write_text("# R\n\n## Architecture: which?\n\n**Answer: mla.**\n")
    return out


def _page(results: Path) -> str:
    page = results / "report.html"
    write_report(collect([results / "pretrain.manifest.json"], [Section("Recommendation", [
        results / "decision" / "recommend.md"])]), page)
    return page.read_text()


def test_the_headline_comes_first_and_links_the_rows_behind_each_finding(results: Path) -> None:
    text = _page(results)
    head = text.index('id="headline"')
    assert head < text.index('id="stage-pretrain"') < text.index('id="glossary"') < text.index('id="run"')
    headline = text[head:text.index("</section>", head)]
    assert "MLA has the lowest perplexity" in headline and "agrees" in headline
    assert "7.79 [7.78, 7.80]" in headline  # the evidence with its interval
    assert 'href="#row-pretrain-xs-mla"' in headline and 'id="row-pretrain-xs-mla"' in text
    assert "Architecture: <b>mla</b>" in headline and 'href="#doc-1-recommendation"' in headline
    assert "not measurable here" in headline  # the serving and fine-tuning claims: no such stages here
    assert "[S]</b> not measured alone: 0" in headline


def test_the_glossary_holds_each_column_once_and_tables_link_to_it(results: Path) -> None:
    text = _page(results)
    assert text.count('id="col-amu-gb"') == 1
    assert text.count("time-averaged memory used") >= 1  # the doc: in the glossary and the header's tooltip
    caption = text[text.index('id="pretrain-main"'):text.index('id="pretrain-main-table"')]
    assert 'href="#glossary"' in caption and "Source:" not in caption


def test_summary_md_opens_with_the_links_and_the_findings(results: Path) -> None:
    _page(results)  # the report exists: linked; the Pareto page does not: named, not linked
    md = write_summary([results / "pretrain.manifest.json"], results).read_text()
    top = md[:md.index("## Contents")]
    assert "[report.html](report.html)" in top and "[decision/recommend.md](decision/recommend.md)" in top
    assert "`decision/pareto.md`" in top
    assert "| MLA has the lowest perplexity | **agrees** |" in top
    assert "| DoRA adds latency | **not measurable here** |" in top


def test_pareto_plots_save_their_points_and_keep_the_legend_off_them(results: Path) -> None:
    manifest = json.loads((results / "pretrain.manifest.json").read_text())
    for p in manifest["plots"]:
        pts = p["points"]  # in the manifest: pixel positions in the PNG, hover texts
        assert len(pts["points"]) == len(METRICS) - len(p["left_out"])
        assert all(0 < q["px"] < pts["width"] and 0 < q["py"] < pts["height"] for q in pts["points"])
        assert any(q["front"] for q in pts["points"]) and any("on the Pareto front" in q["text"] for q in pts["points"])


def test_close_labels_do_not_overprint() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs, ys = [1.0, 1.02, 2.0], [1.0, 1.01, 2.0]  # pissa and rslora, nearly on top of each other
    ax.scatter(xs, ys)
    anns = place_labels(fig, ax, xs, ys, ["xs/pissa", "xs/rslora", "xs/lora"])
    r = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(r) for a in anns]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(3) for j in range(i + 1, 3))


def test_fallback_points_carry_their_mark_in_the_serving_line_plots(tmp_path: Path) -> None:
    rows = [{"status": "ok", "model": "m", "precision": p, "load_point": lp, "cell": f"m/{p}/{lp}",
             "it_tokens_per_s": it, "e2e_s_mean": e2e, "engine": "transformers" if p == "int4" else "vllm",
             "engine_fallback": "vLLM cannot serve int4 here" if p == "int4" else None}
            for p in ("bf16", "int4") for lp, it, e2e in (("low", 100.0, 1.0), ("high", 300.0, 2.0))]
    plot = throughput_latency_plot(pd.DataFrame(rows), tmp_path)
    assert plot is not None
    pts = plot["points"]["points"]
    marked = [q["text"].split("\n")[0] for q in pts if "[F]" in q["text"]]
    assert sorted(marked) == ["m/int4/high [F] served by transformers: vLLM cannot serve int4 here",
                              "m/int4/low [F] served by transformers: vLLM cannot serve int4 here"]
    assert "IT" in pts[0]["text"] and "(no interval)" in pts[0]["text"]
