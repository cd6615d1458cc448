"""The quantization/inference axis without its heavy libraries: latency statistics against a
hand-computed trace, MCR against the paper's check, config errors that name the key, the
serving cells and the aggregation join (accuracy, sizes, both MCRs)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml

from config_edits import DELETE, edited

from effbench import config as cfg
from effbench.aggregate.serving import aggregate_inference, aggregate_quantize, attach_quality, mcr_pair
from effbench.aggregate.summary import write_summary
from effbench.inference.latency import RequestTrace, latency_figures, per_request, throughput_figures
from effbench.measure import formulas
from effbench.measure.figure import Figure
from effbench.record import write_record

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())

# Three requests, by hand:
#   A submitted 0.0, tokens at 0.5 0.6 0.8 1.1 -> TTFT 0.5, E2E 1.1, TPOT 0.6/3 = 0.2, ITL 0.1 0.2 0.3
#   B submitted 0.2, tokens at 0.9 1.0         -> TTFT 0.7, E2E 0.8, TPOT 0.1,         ITL 0.1
#   C submitted 0.4, one token at 1.5          -> TTFT 1.1, E2E 1.1, no TPOT, no ITL
TRACE = [RequestTrace(0.0, [0.5, 0.6, 0.8, 1.1]), RequestTrace(0.2, [0.9, 1.0]), RequestTrace(0.4, [1.5])]


def test_latency_statistics_match_a_hand_computed_trace():
    v = per_request(TRACE)
    assert v["ttft"] == pytest.approx([0.5, 0.7, 1.1])
    assert v["tpot"] == pytest.approx([0.2, 0.1])  # the one-token response has no TPOT
    assert sorted(v["itl"]) == pytest.approx([0.1, 0.1, 0.2, 0.3])
    assert v["e2e"] == pytest.approx([1.1, 0.8, 1.1])
    f = {k: x.value for k, x in latency_figures([TRACE], "test").items()}
    expected = {
        # mean, then linear-interpolation percentiles: sorted xs, position (n-1)·q/100
        "ttft_s_mean": 2.3 / 3, "ttft_s_p50": 0.7, "ttft_s_p90": 0.7 + 0.8 * 0.4, "ttft_s_p99": 0.7 + 0.98 * 0.4,
        "tpot_s_mean": 0.15, "tpot_s_p50": 0.15, "tpot_s_p90": 0.19, "tpot_s_p99": 0.199,
        "itl_s_mean": 0.175, "itl_s_p50": 0.15, "itl_s_p90": 0.27, "itl_s_p99": 0.297,
        "e2e_s_mean": 1.0, "e2e_s_p50": 1.1, "e2e_s_p90": 1.1, "e2e_s_p99": 1.1,
        "al_s_per_request": 1.0,
    }
    for k, want in expected.items():
        assert f[k] == pytest.approx(want), k


def test_throughput_is_total_tokens_over_total_time_with_its_spread():
    f = throughput_figures([100, 60], [2.0, 1.0], "clock")
    assert f["it_tokens_per_s"].value == pytest.approx(160 / 3)  # not the mean of 50 and 60
    assert f["it_cv"].value == pytest.approx((50 ** 0.5) / 55)  # sample std of (50, 60) over the mean
    assert throughput_figures([10], [1.0], "clock")["it_cv"].missing_reason


def test_a_request_without_tokens_is_an_error():
    with pytest.raises(ValueError, match="produced no tokens"):
        per_request([RequestTrace(0.0, [])])


def test_mcr_matches_the_papers_check():
    # DeepSeek-R1-Distill-Qwen-14B int4: 4 × 0.4361 / 0.4719 = 3.6965 (nominal 16/4 bits).
    assert formulas.mcr(16, 4, 0.4361, 0.4719) == pytest.approx(3.6965, abs=5e-5)
    nominal, disk = mcr_pair({"weight_bits": 16, "disk_bytes": 7_350_000}, {"weight_bits": 4, "disk_bytes": 2_690_000},
                             0.4719, 0.4361)
    assert nominal == pytest.approx(3.6965, abs=5e-5)
    assert disk == pytest.approx(7.35 / 2.69 * 0.4361 / 0.4719)


def test_default_serving_cells():
    s = cfg.plan(DEFAULT).serve
    assert {(c.model, c.precision) for c in s.quantize} == {
        (m, p) for m in ("xs-gqa", "xs-mha", "xs-mqa") for p in ("bf16", "int4")}
    assert len(s.inference) == 3 * 2 * len(DEFAULT["inference"]["load_points"])
    int4 = next(c for c in s.quantize if c.precision == "int4")
    assert int4.settings["int4"]["method"] in ("rtn", "gptq", "awq") and int4.settings["weight_bits"] == 4
    assert "int4" not in next(c for c in s.quantize if c.precision == "bf16").settings
    job = s.serving_job("xs-gqa", "int4")
    assert set(job) == set(DEFAULT["inference"]["load_points"])
    assert job["offline"]["point"]["concurrency"] == DEFAULT["inference"]["load_points"]["offline"]["requests"]


def test_paper_serving_grid():
    s = cfg.plan(PAPER).serve
    models = PAPER["quantize"]["models"]
    assert len(models) == 9 and {p for p in PAPER["quantize"]["precisions"]} == {"bf16", "fp16", "int4"}
    assert len(s.quantize) == 27 and len(s.eval) == 27
    assert set(PAPER["eval"]["tasks"]) == {"leaderboard_mmlu_pro", "leaderboard_bbh", "leaderboard_gpqa",
                                           "leaderboard_ifeval", "leaderboard_math_hard", "leaderboard_musr"}


def _edit(path, value, base=DEFAULT):
    return edited(base, path, DELETE if value is None else value)


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("quantize", "precisions"), ["bf16", "int8"], "config key `quantize.precisions.1`"),
        (("quantize", "baseline"), "int4", None),  # valid: int4 is listed
        (("quantize", "precisions"), ["int4"], "config key `quantize.baseline`"),
        (("quantize", "models", "xs-gqa"), {"pretrained": "xs/mla"}, "config key `quantize.models.xs-gqa.pretrained`"),
        (("quantize", "models", "xs-gqa"), {"pretrained": "m/gqa"}, "config key `quantize.models.xs-gqa.pretrained`"),
        (("quantize", "models", "xs-gqa"), {"hf": "a/b", "path": "/x"}, "config key `quantize.models.xs-gqa`"),
        (("quantize", "int4", "method"), "hqq", "config key `quantize.int4.method`"),
        (("quantize", "int4", "group_size"), 100, "config key `quantize.int4.group_size`"),
        (("inference", "engine"), "tgi", "config key `inference.engine`"),
        (("inference", "table_load_point"), "nowhere", "config key `inference.table_load_point`"),
        (("inference", "load_points", "c1", "concurrency"), None, "config key `inference.load_points.c1`"),
        (("inference", "load_points", "c1", "concurrency"), 99, "config key `inference.load_points.c1.concurrency`"),
        (("inference", "load_points", "offline", "prompt_len"), 120, "config key `inference.load_points.offline`"),
        (("eval", "model"), "openai", "config key `eval.model`"),
        (("eval", "local"), None, "config key `eval.local`"),
    ],
)
def test_serving_config_errors_name_the_key(path, value, message):
    c = _edit(path, value)
    if message is None:
        assert cfg.plan(c).serve.baseline == value  # accepted, and the plan's MCR baseline is the one given
        return
    with pytest.raises(cfg.ConfigError) as e:
        cfg.plan(c)
    assert message in str(e.value)


def test_group_size_must_divide_the_models_linear_inputs():
    c = _edit(("pretrain", "sizes", "xs", "ffn_hidden_size"), 320)
    with pytest.raises(cfg.ConfigError, match=r"config key `quantize.int4.group_size`: 128 does not divide .*320"):
        cfg.plan(c)


def test_inference_needs_quantize_and_eval():
    c = _edit(("eval",), None)
    with pytest.raises(cfg.ConfigError, match="eval"):
        cfg.plan(c)
    c = _edit(("quantize",), None, _edit(("eval",), None, _edit(("inference",), None)))
    cells = cfg.plan(c).serve
    assert cells.empty and not cells.inference


def test_a_load_point_edit_changes_only_that_points_settings():
    a = cfg.plan(DEFAULT).serve
    b = cfg.plan(_edit(("inference", "load_points", "c1", "requests"), 6)).serve
    changed = {c.name for c, d in zip(a.inference, b.inference) if c.settings != d.settings}
    assert changed == {f"{m}/{p}/c1" for m in DEFAULT["quantize"]["models"] for p in DEFAULT["quantize"]["precisions"]}
    assert [c.settings for c in a.quantize] == [c.settings for c in b.quantize]


# --- aggregation ------------------------------------------------------------------------

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
BASE = {"run_id": "x", "status": "ok", "settings_json": "{}", "settings_hash": "h", "config_hash": "c",
        "code_version": "git:t", "library_versions_json": "{}", "host": "devbox", "device_kind": "cpu",
        "device_name": "Test CPU", "device_count": 1, "seed": 1, "started_at": T0, "ended_at": T0 + timedelta(1)}
SIZES = {"bf16": (16, 7_350_000), "fp16": (16, 7_350_000), "int4": (4, 2_690_000)}
ACC = {"bf16": 0.40, "fp16": 0.40, "int4": 0.36}


def _fixture(tmp: Path):
    quant, inf, scores = [], [], []
    for p, (bits, disk) in SIZES.items():
        q = tmp / "quantize" / "tiny" / p / "record.parquet"
        write_record(q, {**BASE, "run_id": f"q{p}", "stage": "quantize", "cell": f"tiny/{p}", "model": "tiny",
                         "precision": p, "weight_bits": bits, "disk_bytes": disk, "params_total": 1000,
                         "seconds": 1.0, "quant_method": "gptq" if p == "int4" else None})
        quant.append(q)
        for lp, it in (("offline", 100.0 + bits), ("c1", 20.0 + bits)):
            r = tmp / "inference" / "tiny" / p / lp / "record.parquet"
            write_record(r, {**BASE, "run_id": f"i{p}{lp}", "stage": "inference", "cell": f"tiny/{p}/{lp}",
                             "model": "tiny", "precision": p, "load_point": lp, "params_total": 1000, "seconds": 2.0,
                             "it_tokens_per_s": Figure.of(it, "clock"), "e2e_s_mean": Figure.of(4000 / it, "clock"),
                             "amu_gb": Figure.of(1.0, "psutil_rss"), "aec_w": Figure.missing("no counter"),
                             "kv_bytes_per_token": 1024, "tpot_s_mean": Figure.of(1 / it, "clock")})
            inf.append(r)
        s = tmp / f"s_{p}.json"
        s.write_text(json.dumps({"model": "tiny", "precision": p, "backend": "hf", "accuracy": ACC[p],
                                 "tasks": {"t1": {"metric": "acc", "value": ACC[p], "stderr": 0.03, "n": 100}}}))
        scores.append(s)
    return quant, inf, scores


def test_the_join_computes_accuracy_and_both_mcrs(tmp_path):
    quant, inf, scores = _fixture(tmp_path)
    out = tmp_path / "out"
    m = aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    table = pd.read_csv(out / "tables" / "inference.csv")
    assert list(table["precision"]) == ["bf16", "fp16", "int4"] and set(table["load_point"]) == {"offline"}
    int4 = table[table["precision"] == "int4"].iloc[0]
    assert int4["accuracy"] == pytest.approx(0.36)
    assert int4["mcr_nominal"] == pytest.approx(4 * 0.36 / 0.40)
    assert int4["mcr_disk"] == pytest.approx(7.35 / 2.69 * 0.36 / 0.40)
    assert table[table["precision"] == "bf16"].iloc[0]["mcr_nominal"] == pytest.approx(1.0)
    md = (out / "tables" / "inference.md").read_text()
    assert "nominal bit ratio" in md and "n/a" in md  # AEC: no counter, with its reason
    assert {p["name"] for p in m["plots"]} >= {"inference_accuracy_vs_it_tokens_per_s",
                                                "inference_accuracy_vs_amu_gb", "inference_throughput_vs_latency"}
    assert (out / "plots" / "inference_throughput_vs_latency.png").exists()
    assert (out / "plots" / "inference_kv_bytes_vs_latency.png").exists()
    latency = pd.read_csv(out / "tables" / "inference_latency.csv")
    assert len(latency) == 6  # every load point
    tasks = pd.read_csv(out / "tables" / "inference_tasks.csv")
    assert set(tasks.columns) >= {"task", "value", "stderr"} and len(tasks) == 3
    q = aggregate_quantize(quant, scores, out, "bf16")
    qt = pd.read_csv(out / "tables" / "quantize.csv")
    assert qt[qt["precision"] == "int4"].iloc[0]["disk_bytes"] == 2_690_000
    s = write_summary([out / "inference.manifest.json", out / "quantize.manifest.json"], out).read_text()
    assert "Accuracy per task" in s and "Table 9" in s
    assert q["rows"] == 3


def test_missing_scores_leave_accuracy_and_mcr_missing_with_a_reason(tmp_path):
    quant, inf, scores = _fixture(tmp_path)
    from effbench.aggregate.frame import read_stage_records

    raw = read_stage_records(inf, "inference")
    qdf = read_stage_records(quant, "quantize")
    from effbench.aggregate.serving import load_scores

    sc = load_scores(scores[2:])  # int4 only: no baseline score
    df = attach_quality(raw, qdf, sc, "bf16")
    row = df[(df["precision"] == "int4")].iloc[0]
    assert row["accuracy"] == pytest.approx(0.36) and pd.isna(row["mcr_nominal"])
    assert "baseline bf16" in row["mcr_nominal__missing"]
    bf = df[df["precision"] == "bf16"].iloc[0]
    assert pd.isna(bf["accuracy"]) and bf["accuracy__missing"]
