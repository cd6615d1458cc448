"""Fidelity gates (issue #19 item 4): each precision's fidelity.json carries a verdict (pass | fail
against the project's thresholds, baseline for the baseline itself, none with the reason where a
figure is missing) and the thresholds used; the fidelity table shows it; the report flags a
failing precision; `recommend` leaves a failing precision out and says so, unless
--allow-fidelity-fail. On hand-made fidelity.json files and frames; the real checkpoints' verdicts
are in tests/fidelity/test_fidelity.py. The new names are reached through their modules, so that
each test fails on its own (not the whole file at import) where they are missing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from test_recommend import _frames, _inf, _step
from test_serving import _fixture

from effbench.aggregate.serving import aggregate_inference, aggregate_quantize
from effbench.decision.constraints import Constraints
from effbench.decision.frames import load_frames
from effbench.decision.recommend import recommend
from effbench.decision.recommend_cli import constraints_from, parser
from effbench.decision.recommend_render import render_markdown
from effbench.fidelity import measures
from effbench.fidelity import table as ftable
from effbench.fidelity.job import fidelity_job
from effbench.fidelity.measures import THRESHOLDS, passes
from effbench.fidelity.table import NO_RUN, fidelity_path, load_fidelity, write_fidelity_table
from effbench.inference.engines import ENGINE_KEYS
from effbench.report.inputs import collect
from effbench.report.render import render

GOOD = {"ppl": 7.692, "ppl_baseline": 7.689, "kl_mean": 3.83e-4, "kl_p99": 3.84e-3, "top1_agreement": 0.9897}
# the corrupted int4: one layer's scales zeroed
BAD = {"ppl": 8.41, "ppl_baseline": 7.689, "kl_mean": 0.099, "kl_p99": 1.2, "top1_agreement": 0.84}
BAD_WHY = "KL mean 0.099 > 0.05; top-1 agreement 0.84 < 0.9"


# --- the verdict ------------------------------------------------------------------------------------


def test_verdict_and_thresholds_computed() -> None:
    good = measures.verdict(GOOD)
    assert good["verdict"] == "pass" and good["verdict__missing"] is None
    assert good["thresholds"] == {"kl_mean_max": 0.05, "top1_agreement_min": 0.9}
    assert good["verdict_reason"] == "KL mean 3.8e-04 ≤ 0.05; top-1 agreement 0.99 ≥ 0.9"
    bad = measures.verdict(BAD)
    assert bad["verdict"] == "fail" and bad["verdict_reason"] == BAD_WHY and not passes(BAD)
    # one threshold missed fails; the reason names only that one
    assert measures.verdict({**GOOD, "top1_agreement": 0.85}) == {
        "verdict": "fail", "verdict__missing": None, "verdict_reason": "top-1 agreement 0.85 < 0.9",
        "thresholds": dict(THRESHOLDS)}
    # a value that rounds to its limit is shown with the digits that tell them apart
    assert measures.verdict({**GOOD, "top1_agreement": 0.8996})["verdict_reason"] == "top-1 agreement 0.8996 < 0.9"
    # the thresholds given are the ones used and recorded
    strict = measures.verdict(GOOD, {"kl_mean_max": 1e-4, "top1_agreement_min": 0.9})
    assert strict["verdict"] == "fail" and strict["thresholds"]["kl_mean_max"] == 1e-4
    assert strict["verdict_reason"] == "KL mean 3.8e-04 > 0.0001"
    with pytest.raises(ValueError, match="ppl_ratio"):
        measures.verdict(GOOD, {"ppl_ratio_max": 1.05})


def test_the_baseline_and_a_missing_figure() -> None:
    base = {**GOOD, "kl_mean": None, "kl_p99": None, "top1_agreement": None,
            **{f"{k}__missing": "the baseline itself" for k in ("kl_mean", "kl_p99", "top1_agreement")}}
    assert measures.verdict(base, baseline=True)["verdict"] == "baseline"
    v = measures.verdict({**GOOD, "kl_mean": None, "kl_mean__missing": "extraction failed"})
    assert v["verdict"] is None
    assert v["verdict__missing"] == "KL mean not measured (extraction failed)"
    # a threshold missed fails even where another figure is missing
    v = measures.verdict({**BAD, "kl_mean": None})
    assert v["verdict"] == "fail" and v["verdict_reason"].startswith("top-1 agreement 0.84 < 0.9; KL mean not measured")


def test_the_fidelity_job_states_its_thresholds() -> None:
    settings = {k: None for k in ENGINE_KEYS}
    serve = SimpleNamespace(baseline="bf16", precisions_of=lambda m: ["bf16", "int4"],
                            serving_job=lambda m, p, open_loop=False: {"offline": settings})
    job = fidelity_job(serve, "xs-gqa", 1)
    assert job["thresholds"] == THRESHOLDS and list(job["precisions"]) == ["bf16", "int4"]


# --- the fidelity table ----------------------------------------------------------------------------


def _write(where: Path, model: str, precision: str, figures: dict, *, with_verdict: bool = True) -> Path:
    f = {"model": model, "precision": precision, "baseline": "bf16", "engine": "vllm", "dtype": "bf16",
         "positions": 4032, **figures}
    if with_verdict:
        f.update(measures.verdict(figures, baseline=precision == "bf16"))
    p = fidelity_path(where, model, precision)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(f))
    return p


BASE_FIGURES = {"ppl": 7.689, "ppl_baseline": 7.689, "kl_mean": None, "kl_p99": None, "top1_agreement": None,
                **{f"{k}__missing": "the baseline itself" for k in ("kl_mean", "kl_p99", "top1_agreement")}}


def test_the_fidelity_table_shows_the_verdict(tmp_path: Path) -> None:
    files = [_write(tmp_path, "xs-gqa", "bf16", BASE_FIGURES), _write(tmp_path, "xs-gqa", "fp16", GOOD),
             _write(tmp_path, "xs-gqa", "int4", BAD),
             _write(tmp_path, "xs-mqa", "int4", GOOD, with_verdict=False)]  # written before verdicts were
    keys = [("xs-gqa", "bf16"), ("xs-gqa", "fp16"), ("xs-gqa", "int4"), ("xs-mqa", "int4"), ("xs-mha", "int4")]
    write_fidelity_table(tmp_path / "out", keys, load_fidelity(files))
    t = pd.read_csv(tmp_path / "out" / "tables" / "fidelity.csv")
    assert list(t["verdict"].fillna("")) == ["baseline", "pass", "fail", "pass", ""]
    row = t.set_index(["model", "precision"])
    assert row.loc[("xs-gqa", "int4"), "verdict_reason"] == BAD_WHY
    assert row.loc[("xs-mha", "int4"), "verdict__missing"] == NO_RUN
    assert list(t["threshold_kl_mean_max"][:4]) == [0.05] * 4
    assert list(t["threshold_top1_agreement_min"][:4]) == [0.9] * 4
    md = (tmp_path / "out" / "tables" / "fidelity.md").read_text()
    assert "| Positions | Fidelity |" in md and "kl_mean_max=0.05, top1_agreement_min=0.9" in md
    assert f"| 4032 | fail ({BAD_WHY}) |" in md and "| 4032 | baseline |" in md and "| 4032 | pass |" in md
    assert f"| n/a | n/a ({NO_RUN}) |" in md


def test_attach_verdict_joins_it_onto_serving_rows(tmp_path: Path) -> None:
    fid = load_fidelity([_write(tmp_path, "m", "bf16", BASE_FIGURES), _write(tmp_path, "m", "int4", BAD)])
    df = ftable.attach_verdict(pd.DataFrame({"model": ["m", "m", "m"], "precision": ["bf16", "int4", "fp16"]}), fid)
    assert list(df["fid_verdict"]) == ["baseline", "fail", None]
    assert df["fid_verdict__reason"][1] == BAD_WHY and df["fid_verdict__missing"][2] == NO_RUN
    assert df["fid_verdict__source"][1] == "fidelity.json: kl_mean_max=0.05, top1_agreement_min=0.9"


# --- the report -------------------------------------------------------------------------------------


def _tiny_fidelity(where: Path) -> list[Path]:
    """The serving fixture's model `tiny`: int4 fails, fp16 passes."""
    return [_write(where, "tiny", "bf16", BASE_FIGURES), _write(where, "tiny", "fp16", GOOD),
            _write(where, "tiny", "int4", BAD)]


def test_the_report_flags_a_failing_precision(tmp_path: Path) -> None:
    quant, inf, scores = _fixture(tmp_path)
    out = tmp_path / "results"
    fidelity = _tiny_fidelity(out)
    aggregate_inference(inf, quant, scores, out, "bf16", "offline", fidelity)
    aggregate_quantize(quant, scores, out, "bf16", fidelity)
    page = render(collect([out / "quantize.manifest.json", out / "inference.manifest.json"]), out / "report.html")
    failures = page.split("Rows flagged as not comparable", 1)[1].split("</section>", 1)[0]
    assert "[X] fidelity: fail" in failures
    assert "tiny/int4</td>" in failures and "tiny/int4/offline" in failures  # quantize and inference cells
    assert "tiny/fp16" not in failures and "tiny/bf16" not in failures
    assert "KL mean 0.099 &gt; 0.05; top-1 agreement 0.84 &lt; 0.9" in failures
    assert "kl_mean_max=0.05" in failures


# --- recommend ---------------------------------------------------------------------------------------


def _verdicts(rows: list[dict], failing: set[tuple[str, str]]) -> list[dict]:
    for r in rows:
        bad = (r["model"], r["precision"]) in failing
        r.update(fid_verdict="baseline" if r["precision"] == "bf16" else "fail" if bad else "pass",
                 fid_verdict__reason=BAD_WHY if bad else None)
    return rows


def _served(failing: set[tuple[str, str]]):
    # int4 halves the memory (the objective): it wins unless it is left out
    return _frames(inf=_verdicts([_inf("xs-mha", "bf16", 0.50, 2.0, 0.012), _inf("xs-mha", "int4", 0.49, 1.0, 0.010),
                                  _inf("xs-mqa", "bf16", 0.45, 1.8, 0.011), _inf("xs-mqa", "int4", 0.44, 0.9, 0.010)],
                                 failing))


def test_recommend_leaves_a_failing_precision_out_and_says_so() -> None:
    a = recommend(_served({("xs-mha", "int4")}), Constraints())
    prec = _step(a, "precision")
    assert prec["group"] == {"model": "xs-mha"}
    assert prec["choice"]["candidate"] == "bf16" and [x["candidate"] for x in prec["candidates"]] == ["bf16"]
    line = f"xs-mha int4 failed fidelity ({BAD_WHY})"
    assert a["fidelity"]["allow_fidelity_fail"] is False
    assert [(f["line"], f["left_out"], f["cells"]) for f in a["fidelity"]["failed"]] == [
        (line, True, ["xs-mha/int4/offline"])]
    assert any(n.startswith(f"left out: {line}") and "--allow-fidelity-fail" in n for n in prec["not_candidates"])
    md = render_markdown(a)
    assert f"not a candidate: left out: {line}" in md
    # the paper's int4 rule still reads int4's measured drop
    assert prec["paper"]["measured"]["precision"] == "int4"


def test_recommend_keeps_it_with_the_opt_in_flag() -> None:
    a = recommend(_served({("xs-mha", "int4")}), Constraints(allow_fidelity_fail=True))
    prec = _step(a, "precision")
    assert prec["choice"]["candidate"] == "int4"
    assert a["fidelity"]["failed"][0]["left_out"] is False
    assert any("kept although xs-mha int4 failed fidelity" in w for w in prec["warnings"])
    assert "left out: xs-mha" not in render_markdown(a)


def test_passing_precisions_and_rows_without_a_verdict_are_kept() -> None:
    assert _step(recommend(_served(set()), Constraints()), "precision")["choice"]["candidate"] == "int4"
    a = recommend(_frames(), Constraints())  # no fidelity columns at all
    assert _step(a, "precision")["choice"]["candidate"] == "int4" and a["fidelity"]["failed"] == []


def test_a_failing_precision_does_not_stand_for_its_architecture() -> None:
    """The architecture step judges a technique's serving limits on its first precision that meets
    them: not on one that failed fidelity."""
    c = Constraints(latency_ms_per_token=10.5)  # only the int4s meet it
    arch = _step(recommend(_served({("xs-mha", "int4")}), c), "architecture")
    assert arch["choice"]["candidate"] == "mqa"  # mha's only qualifying precision failed fidelity
    assert _step(recommend(_served({("xs-mha", "int4")}), Constraints(latency_ms_per_token=10.5,
                                                                      allow_fidelity_fail=True)),
                 "architecture")["choice"]["candidate"] == "mha"


def test_the_command_line_flag_and_the_config_key() -> None:
    assert constraints_from({"recommend": {}}, parser().parse_args([])).allow_fidelity_fail is False
    assert constraints_from({"recommend": {}}, parser().parse_args(["--allow-fidelity-fail"])).allow_fidelity_fail
    assert constraints_from({"recommend": {"allow_fidelity_fail": True}}, parser().parse_args([])).allow_fidelity_fail
    with pytest.raises(ValueError, match="allow_fidelity_fail"):
        Constraints(allow_fidelity_fail="yes")  # type: ignore[arg-type]


def test_the_schema_knows_the_key() -> None:
    from effbench.config import validate
    from effbench.config.yaml_strict import load_file
    from effbench.decision.recommend_cli import DEFAULT_CONFIG

    config, _ = load_file(str(DEFAULT_CONFIG))
    assert validate(config)["recommend"]["allow_fidelity_fail"] is False
    config["recommend"] = {**(config.get("recommend") or {}), "allow_fidelity_fail": True}
    assert Constraints.from_mapping(validate(config)["recommend"]).allow_fidelity_fail is True


def test_the_decision_frames_carry_the_verdict(tmp_path: Path) -> None:
    """From real serving records and fidelity.json files, as the decision rule reads them."""
    quant, inf, scores = _fixture(tmp_path)
    results = tmp_path / "results"
    frames = load_frames([], [], quant, inf, scores, results, "bf16", "offline", _tiny_fidelity(results))
    got = frames.inference.drop_duplicates(["precision"]).set_index("precision")["fid_verdict"].to_dict()
    assert got == {"bf16": "baseline", "fp16": "pass", "int4": "fail"}
    prec = _step(recommend(frames, Constraints()), "precision")
    assert "int4" not in [x["candidate"] for x in prec["candidates"]]
    assert any("left out: tiny int4 failed fidelity" in n for n in prec["not_candidates"])
    kept = _step(recommend(frames, Constraints(allow_fidelity_fail=True)), "precision")
    assert "int4" in [x["candidate"] for x in kept["candidates"]]
