"""The report states what every energy figure counted (issue #22): beside each table and plot with
energy, the scope's sentence (effbench.measure.energy_scope.SCOPE_NOTES); where rows differ in
scope, the mixed-scope flag in the captions and the headline; the findings never compare joules of
different scopes; the rate-sweep curves are on the serving section. Built from a real inference
aggregation of hand-made records (test_open_loop_tables')."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from effbench.measure.energy_scope import SCOPE_NOTES
from effbench.report.findings import AGREES, int4_cuts
from effbench.report.inputs import collect
from effbench.report.render import write_report


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    from test_open_loop_tables import write_serving

    from effbench.aggregate.serving import aggregate_inference

    tmp = tmp_path_factory.mktemp("report_scope")
    results = tmp / "results"
    # int4 served on a Grace superchip (module counter), bf16 on a GPU board
    quant, inf, scores = write_serving(results, points=("offline", "poisson@4.5"), scopes={"int4": "module"},
                                       precisions=("bf16", "int4"))
    aggregate_inference(inf, quant, scores, results, "bf16", "poisson@4.5")
    out = results / "report.html"
    write_report(collect([results / "inference.manifest.json"], [], json.dumps({"seed": 1}), "c" * 64), out)
    return out.read_text()


def test_every_energy_table_and_plot_states_its_scope_and_the_mix_is_flagged(page: str) -> None:
    import html

    text = html.unescape(page)
    for scope in ("gpu", "module"):
        assert SCOPE_NOTES[scope] in text, scope
    # the tables' captions (Table 9 and the latency table) and the AEC Pareto plot's
    assert text.count("Energy scope.") >= 3
    aec = text[text.index('id="plot-inference_accuracy_vs_aec_w"'):]
    aec = aec[:aec.index("</figure>")]
    assert "Energy scope." in aec and "[mixed energy scopes]" in aec
    amu = text[text.index('id="plot-inference_accuracy_vs_amu_gb"'):]
    assert "Energy scope." not in amu[:amu.index("</figure>")]  # no energy axis, nothing to say
    headline = text[:text.index('id="stage-inference"')]
    assert "[mixed energy scopes]" in headline and "inference_latency" in headline
    # the finding on int4's energy cut does not compare a module's joules with a GPU board's
    assert "energy not compared: energy figures of different scopes are compared (gpu, module)" in headline


def test_the_rate_sweep_curves_are_on_the_serving_section(page: str) -> None:
    for name in ("inference_rate_sweep_ttft", "inference_rate_sweep_goodput"):
        assert f'id="plot-{name}"' in page
    assert "open-loop rate sweep" in page


def _rows(int4_scope: str | None) -> pd.DataFrame:
    base = {"model": "m", "status": "ok", "amu_gb": 2.0, "amu_gb__ci_low": 1.9, "amu_gb__ci_high": 2.1,
            "energy_j_per_token": 0.04, "energy_j_per_token__ci_low": 0.039, "energy_j_per_token__ci_high": 0.041,
            "accuracy_drop": 0.0}
    return pd.DataFrame([
        {**base, "precision": "bf16", "cell": "m/bf16/p", "quality_vs_baseline": "baseline", "energy_scope": "gpu"},
        {**base, "precision": "int4", "cell": "m/int4/p", "amu_gb": 0.6, "amu_gb__ci_low": 0.55,
         "amu_gb__ci_high": 0.65,
         "energy_j_per_token": 0.01, "energy_j_per_token__ci_low": 0.009, "energy_j_per_token__ci_high": 0.011,
         "accuracy_drop": 0.02, "accuracy_drop__ci_low": 0.0, "accuracy_drop__ci_high": 0.04,
         "energy_scope": int4_scope}])


def test_findings_compare_energy_only_within_one_scope() -> None:
    same = int4_cuts(_rows("gpu"))
    assert same.verdict == AGREES and "energy ×" in same.evidence[0] and "energy scope gpu" in same.evidence[0]
    mixed = int4_cuts(_rows("module"))
    assert "energy ×" not in mixed.evidence[0] and "memory ×" in mixed.evidence[0]
    assert "energy not compared" in mixed.evidence[0] and "(gpu, module)" in mixed.evidence[0]
