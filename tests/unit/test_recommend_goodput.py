"""`recommend` with a goodput floor under the user's SLOs (issue #22): a precision qualifies when a
load point measured under SLOs no looser than asked reached the floor; one measured only under
looser SLOs cannot prove it and is left out saying so; bad arguments exit 2 naming their range.
Frames built by hand as test_recommend builds them, and once the real command on hand-made records
(test_open_loop_tables')."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from test_recommend import _frames, _inf, _step

from effbench.cli import main as effbench_main
from effbench.decision.constraints import Constraints
from effbench.decision.goodput import usage_errors
from effbench.decision.recommend import recommend
from effbench.decision.recommend_render import render_markdown

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "config" / "config.yaml")


def _rate(model: str, precision: str, goodput: float, frac: float, ttft_ms: float, tpot_ms: float,
          lp: str = "poisson@4") -> dict:
    row = _inf(model, precision, 0.5, 1.0, 0.01, lp)
    row.update(load_mode="rate", slo_ttft_ms=ttft_ms, slo_tpot_ms=tpot_ms, goodput_rps=goodput, goodput_frac=frac,
               goodput_rps__source="clock", goodput_rps__ci_low=goodput - 0.1, goodput_rps__ci_high=goodput + 0.1)
    return row


def _serving(extra: list[dict]) -> list[dict]:
    return [_inf("xs-mha", "bf16", 0.50, 2.0, 0.012), _inf("xs-mha", "int4", 0.49, 1.0, 0.010),
            _inf("xs-mha", "int8", 0.495, 1.5, 0.011), *extra]


def _precision(**limits) -> dict:  # type: ignore[no-untyped-def]
    inf = _serving([_rate("xs-mha", "bf16", 1.0, 0.5, 200, 50), _rate("xs-mha", "int4", 3.0, 0.9, 200, 50),
                    # int8 only ever measured under looser SLOs: its goodput proves nothing at 200/50
                    _rate("xs-mha", "int8", 9.0, 1.0, 500, 50),
                    _rate("xs-mha", "int8", 8.0, 1.0, 200, 80, "poisson@2")])
    return _step(recommend(_frames(inf=inf), Constraints(memory_gb=100, **limits)), "precision")


def _cand(step: dict, precision: str) -> dict:
    return next(c for c in step["candidates"] if c["candidate"] == precision)


def test_a_goodput_floor_under_the_slos_asked_picks_the_precision_that_reaches_it() -> None:
    s = _precision(min_goodput_rps=2.0, slo_ttft_ms=200, slo_tpot_ms=50)
    assert s["choice"]["candidate"] == "int4"
    assert "goodput under the SLOs (req/s) 1.00 < limit 2.00" in _cand(s, "bf16")["excluded"]
    check = next(ch for ch in _cand(s, "int4")["checks"] if ch["constraint"] == "min_goodput_rps")
    assert check["value"] == 3.0 and check["status"] == "pass" and check["ci_low"] == pytest.approx(2.9)
    # the share of requests within the SLOs is a floor too
    s = _precision(min_goodput_frac=0.95, slo_ttft_ms=200, slo_tpot_ms=50)
    assert s["status"] == "nothing meets the constraints" and s["binding"]["constraint"] == "min_goodput_frac"


def test_a_record_measured_under_looser_slos_cannot_prove_the_floor() -> None:
    s = _precision(min_goodput_rps=2.0, slo_ttft_ms=200, slo_tpot_ms=50)
    why = _cand(s, "int8")["excluded"]
    assert "unverified" in why and "looser SLOs than asked" in why
    assert "poisson@4 (TTFT 500 ms > 200 ms asked)" in why and "poisson@2 (TPOT 80 ms > 50 ms asked)" in why
    # asked as loose as its SLOs, int8's own goodput proves the floor, and it wins on memory among those that pass
    s = _precision(min_goodput_rps=2.0, slo_ttft_ms=500, slo_tpot_ms=80)
    assert "excluded" not in _cand(s, "int8") and s["choice"]["candidate"] == "int4"
    # without SLOs asked, any record's SLOs stand, and the answer says so
    a = recommend(_frames(inf=_serving([_rate("xs-mha", "int4", 3.0, 0.9, 200, 50)])), Constraints(min_goodput_rps=2))
    assert "Goodput judged under SLOs as each record measured them" in render_markdown(a)


def test_no_goodput_measured_is_unverified_with_the_records_reason() -> None:
    inf = _serving([])
    for r in inf:
        r["goodput_rps__missing"] = "the load point sets no SLO (offline)"
    s = _step(recommend(_frames(inf=inf), Constraints(min_goodput_rps=1, slo_ttft_ms=200)), "precision")
    assert s["status"] == "nothing meets the constraints"
    assert all("goodput not measured at any load point: the load point sets no SLO (offline)" in c["excluded"]
               for c in s["candidates"])


@pytest.mark.parametrize("args, said", [
    (["--min-goodput", "-1"], "--min-goodput must be a number of requests/s ≥ 0, got -1.0"),
    (["--min-goodput-frac", "1.5"], "--min-goodput-frac must be a fraction of requests from 0 to 1, got 1.5"),
    (["--min-goodput", "1", "--slo-ttft-ms", "0"], "--slo-ttft-ms must be a time to first token in ms > 0"),
    (["--slo-tpot-ms", "50"], "--slo-tpot-ms sets the SLO a goodput floor is judged under: give --min-goodput"),
    (["--min-goodput", "fast"], "invalid float value: 'fast'"),
])
def test_bad_goodput_arguments_exit_2_naming_the_range(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       args: list[str], said: str) -> None:
    rc = effbench_main(["recommend", "--configfile", CONFIG, "--results", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2 and said in err, err
    assert usage_errors({"min_goodput_rps": 1.0, "slo_ttft_ms": 200.0}) == []
    with pytest.raises(ValueError, match="min_goodput_frac must be a fraction"):
        Constraints(min_goodput_frac=2.0)


def test_the_command_judges_the_floor_on_real_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_open_loop_tables import write_serving

    from effbench.aggregate.serving import aggregate_inference, aggregate_quantize

    results = tmp_path / "results"
    quant, inf, scores = write_serving(results, points=("offline", "poisson@4.5"), precisions=("bf16", "int8"))
    aggregate_inference(inf, quant, scores, results, "bf16", "offline")
    aggregate_quantize(quant, scores, results, "bf16")
    for f in scores:  # where the eval stage writes them: recommend reads them there
        p = f.stem.removeprefix("s_")
        (results / "eval" / "tiny" / p).mkdir(parents=True)
        f.rename(results / "eval" / "tiny" / p / "scores.json")
    base = ["recommend", "--configfile", CONFIG, "--results", str(results), "--json", "--max-accuracy-drop", "0.1"]
    # poisson@4.5 (SLOs 200 / 50 ms): goodput 1.6 req/s at both precisions
    assert effbench_main([*base, "--min-goodput", "1.5", "--slo-ttft-ms", "200", "--slo-tpot-ms", "50"]) == 0
    s = _step(json.loads(capsys.readouterr().out), "precision")
    assert s["status"] == "chosen"
    assert {c["candidate"] for c in s["candidates"] if "excluded" not in c} == {"bf16", "int8"}
    assert effbench_main([*base, "--min-goodput", "1.5", "--slo-ttft-ms", "100"]) == 0
    s = _step(json.loads(capsys.readouterr().out), "precision")
    assert s["status"] == "nothing meets the constraints"
    assert all("TTFT 200 ms > 100 ms asked" in c["excluded"] for c in s["candidates"]), s["candidates"]
    frame = pd.read_csv(results / "tables" / "inference_latency.csv")
    assert set(frame["slo_ttft_ms"].dropna()) == {200.0}


def test_energy_of_different_scopes_is_warned_about_not_compared_silently() -> None:
    from effbench.decision.axes import INFERENCE
    from effbench.decision.pareto import axis_fronts, render_front

    inf = _serving([])
    for r, (e, scope) in zip(inf, ((0.03, "gpu"), (0.01, "module"), (0.02, "gpu"))):
        r.update(energy_j_per_token=e, energy_j_per_token__missing=None, energy_scope=scope)
    s = _step(recommend(_frames(inf=inf), Constraints(precision_objective="energy")), "precision")
    assert any("different scopes are compared (gpu, module)" in w for w in s["warnings"]), s["warnings"]
    front = axis_fronts(pd.DataFrame(inf), INFERENCE)[0]
    assert any("Warning: energy figures of different scopes" in line for line in render_front(front))
    for r in inf:
        r["energy_scope"] = "gpu"
    s = _step(recommend(_frames(inf=inf), Constraints(precision_objective="energy")), "precision")
    assert not any("scopes" in w for w in s["warnings"])
