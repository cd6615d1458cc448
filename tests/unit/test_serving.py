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

import record_consistency as rc
from config_edits import DELETE, edited

from effbench import config as cfg
from effbench.aggregate.frame import read_stage_records
from effbench.aggregate.serving import aggregate_inference, aggregate_quantize, attach_quality, load_scores, mcr_pair
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
    f = {k: x.value for k, x in latency_figures([TRACE], "test", tail=0).items()}
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
        (m, p) for m in ("xs-gqa", "xs-mha", "xs-mqa", "xs-mla", "xs-moe") for p in ("bf16", "int4")} | {
        ("xs-gqa", "fp8"), ("xs-gqa", "int8")}  # beyond the paper, on the GQA model only
    closed = s.points(open_loop=False)
    assert closed == ["offline", "c1"] and s.points(open_loop=True)[0] == "poisson"
    assert len([c for c in s.inference if c.load_point in closed]) == (5 * 2 + 2) * len(closed)
    assert {(c.model, c.precision) for c in s.inference if c.load_point not in closed} == {
        ("xs-gqa", "bf16"), ("xs-gqa", "fp8")}
    int4 = next(c for c in s.quantize if c.precision == "int4")
    assert int4.settings["int4"]["method"] in ("rtn", "gptq", "awq") and int4.settings["weight_bits"] == 4
    assert "int4" not in next(c for c in s.quantize if c.precision == "bf16").settings
    job = s.serving_job("xs-gqa", "int4")
    assert set(job) == set(closed)
    assert job["offline"]["point"]["concurrency"] == DEFAULT["inference"]["load_points"]["offline"]["requests"]


def test_paper_serving_grid():
    s = cfg.plan(PAPER).serve
    models = PAPER["quantize"]["models"]
    assert len(models) == 9 and {p for p in PAPER["quantize"]["precisions"]} == {"bf16", "fp16", "int4"}
    assert len(s.quantize) == 9 * 5 and len(s.eval) == 9 * 5  # the paper's 3 precisions and fp8, int8
    assert {c.precision for c in s.quantize if c.settings.get("precision_set") == "beyond_paper"} == {"fp8", "int8"}
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
        (("quantize", "models", "xs-gqa"), {"pretrained": "xs/nosuch"}, "config key `quantize.models.xs-gqa.pretrained`"),
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
    with pytest.raises(cfg.ConfigError, match=r"config key `quantize.int4.group_size`: int4 group_size 128 does not divide .*320"):
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
    assert changed == {f"{m}/{p}/c1" for m in DEFAULT["quantize"]["models"] for p in a.precisions_of(m)}
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
    # Accuracy's and both MCRs' intervals (delta method) hold their values, and are not negative.
    assert {"mcr_nominal__ci_low", "mcr_disk__ci_high", "accuracy__ci_low"} <= set(table.columns)
    assert int4["mcr_nominal__ci_low"] < int4["mcr_nominal"] < int4["mcr_nominal__ci_high"]
    for row in table.to_dict("records"):
        rc.check_intervals(row)
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
    for row in qt.to_dict("records"):
        rc.check_intervals(row)


def test_the_baseline_mcr_is_exactly_one_without_an_interval(tmp_path):
    # Issue #19 item 8: the baseline's MCR is its own size and accuracy over themselves, 1 by
    # definition, not a ratio of two independent measurements: no delta-method interval (which
    # would be 1.000 ± 0.21 here and widen the leaderboard's noise of MCR).
    quant, inf, scores = _fixture(tmp_path)
    out = tmp_path / "out"
    aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    aggregate_quantize(quant, scores, out, "bf16")
    for stage in ("inference", "quantize"):
        table = pd.read_csv(out / "tables" / f"{stage}.csv")
        bf16 = table[table["precision"] == "bf16"].iloc[0]
        fp16 = table[table["precision"] == "fp16"].iloc[0]
        for k in ("mcr_nominal", "mcr_disk"):
            assert bf16[k] == 1.0, (stage, k)
            assert pd.isna(bf16[k + "__ci_low"]) and pd.isna(bf16[k + "__ci_high"]), (stage, k)
            # another precision is a measurement against the baseline: it keeps its interval
            assert fp16[k + "__ci_low"] < fp16[k] < fp16[k + "__ci_high"], (stage, k)
        md = (out / "tables" / f"{stage}.md").read_text()
        row = next(line for line in md.splitlines() if line.startswith("| tiny | bf16 |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        header = next(line for line in md.splitlines() if line.startswith("| Model |"))
        heads = [c.strip() for c in header.strip("|").split("|")]
        assert cells[heads.index("MCR")] == "1.000" and cells[heads.index("MCR (disk)")] == "1.000", row
    raw = read_stage_records(inf, "inference")
    df = attach_quality(raw, read_stage_records(quant, "quantize"), load_scores(scores), "bf16")
    bf = df[df["precision"] == "bf16"].iloc[0]
    assert bf["mcr_nominal__ci_method"] is None and "baseline" in bf["mcr_nominal__source"]
    assert bf["mcr_nominal__missing"] is None  # the value is there; only its interval is not


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


# --- a load point served end to end over a scripted engine and energy counter --------------------


class ServingClock:
    """Monotonic seconds advanced by the scripted engine as it serves (no wall-clock rate)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class ScriptedEngine:
    """The serving library's boundary: each run() takes ``durations`` seconds of scripted time in
    turn (warm-up 0.5 s), two requests at a time, and returns their client-side traces."""

    name = "scripted"
    trace_source = "scripted_client_trace"
    batch_cap = None

    def __init__(self, clock: ServingClock, durations: list[float]) -> None:
        self.clock, self.durations = clock, list(durations)

    def run(self, prompts, output_len, concurrency, tag):  # type: ignore[no-untyped-def]
        d = 0.5 if tag.endswith("-warmup") else self.durations.pop(0)
        start, waves = self.clock.t, -(-len(prompts) // concurrency)
        traces = []
        for j in range(len(prompts)):
            begin = start + (j // concurrency) * d / waves
            traces.append(RequestTrace(start, [begin + d / waves * (k + 1) / output_len for k in range(output_len)]))
        self.clock.t = start + d
        return traces

    def close(self) -> None:
        pass


class ScriptedCounterDevice:
    """One device drawing a steady 50 W on the scripted clock; memory 2 GB of 8 GB."""

    name = "scripted"
    mem_source = "scripted_mem"
    util_source = "scripted_util"
    energy_source = "scripted_counter"
    energy_update_hz = 1000.0

    def __init__(self, clock: ServingClock) -> None:
        self.clock = clock

    def read(self):  # type: ignore[no-untyped-def]
        return [(0, "mem_used_bytes", 2e9), (0, "mem_total_bytes", 8e9), (0, "util_percent", 40.0)]

    def energy_j(self) -> float:
        return 50.0 * self.clock.t

    def describe(self):  # type: ignore[no-untyped-def]
        return {"device_kind": "cuda", "device_name": "scripted", "device_count": 1, "driver_version": "0"}

    def close(self) -> None:
        pass


def scripted_point(tmp_path: Path, durations: list[float]):  # type: ignore[no-untyped-def]
    from effbench.inference.serve import SharedEngine, serve_point
    from effbench.measure.monitor import Monitor
    from effbench.record import SIDE_CAR

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 64, "hidden_size": 32, "num_attention_heads": 2,
                                                   "num_hidden_layers": 1, "bos_token_id": 0, "eos_token_id": 1}))
    (model / SIDE_CAR).write_text(json.dumps({"weight_bits": 16, "quant_method": None, "params_total": 1000,
                                              "disk_bytes": 2000}))
    settings = {**cfg.plan(DEFAULT).serve.inference[0].settings, "repeats": len(durations), "min_seconds": 0,
                "warmup_requests": 1}
    settings["point"] = {**settings["point"], "requests": 4, "prompt_len": 8, "output_len": 5, "concurrency": 2}
    clock = ServingClock()
    shared = SharedEngine(settings, model, "cpu")
    shared.engine = ScriptedEngine(clock, durations)  # opened: serve_point takes it as is
    mon = Monitor(backend=ScriptedCounterDevice(clock), interval_s=1.0, clock=clock)  # edges and marks only
    return serve_point(settings, shared, mon)


def test_serving_energy_per_token_is_over_every_repeats_tokens(tmp_path):
    """Three repeats of 4 requests × 5 tokens, taking 1, 2 and 3 s at 50 W: 300 J for 60 tokens,
    5 J/token (one repeat's 20 tokens would read 15)."""
    v = scripted_point(tmp_path, [1.0, 2.0, 3.0])
    assert v["repeats"] == 3 and v["tokens"] == 3 * 4 * 5 and v["samples"] == 12
    assert v["seconds"] == pytest.approx(6.0)  # the window spans the repeats, not the warm-up
    assert v["energy_j"].value == pytest.approx(300.0)
    assert v["aec_w"].value == pytest.approx(50.0)
    assert v["energy_j_per_token"].value == pytest.approx(300.0 / 60)
    assert v["energy_j_per_token"].source == "scripted_counter/generated_tokens"
    iv, e = v["energy_j_per_token"].interval, v["energy_j"].interval
    assert iv is not None and (iv.low, iv.high) == pytest.approx((e.low / 60, e.high / 60))


def test_serving_intervals_contain_their_values_and_stay_non_negative(tmp_path):
    """Repeats of very different speed (1, 2, 6 s): every interval of the point's figures still
    contains its value and no latency, energy or throughput interval reaches below zero."""
    import record_consistency as rc

    from effbench.record import flatten

    v = scripted_point(tmp_path, [1.0, 2.0, 6.0])
    row = {"cell": "scripted/bf16/offline", **flatten(v)}
    assert row["ttft_s_p50__ci_low"] is not None and row["e2e_s_mean__ci_low"] is not None
    rc.check_intervals(row)


def test_percentile_intervals_hold_the_order_statistic_interval_of_the_pooled_requests():
    """Two repeats of 200 requests, TTFT 0.001 · i s (i = 1…200) plus a shift per repeat. Alike
    repeats (no shift): the t interval over the repeats is a point, so the interval is the pooled
    400 values' order-statistic interval. Repeats 0.02 s apart: the t interval over the two p50s
    (12.706 · 0.0141 / √2 = 0.127 around 0.11) would reach below 0, and is cut there."""
    from effbench.measure import spread

    def figures(shift):  # type: ignore[no-untyped-def]
        reps = [[RequestTrace(0.0, [0.001 * i + s, 0.001 * i + s + 0.01]) for i in range(1, 201)] for s in (0.0, shift)]
        return latency_figures(reps, "test", tail=0), sorted(0.001 * i + s for i in range(1, 201) for s in (0.0, shift))

    f, pooled = figures(0.0)
    for st, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        fig = f[f"ttft_s_{st}"]
        assert fig.value == pytest.approx(formulas.percentile(pooled, q))
        os_iv = spread.quantile_interval(pooled, q)
        assert (fig.interval.low, fig.interval.high) == pytest.approx((os_iv.low, os_iv.high))
        assert fig.interval.method == "order_statistic+t_repeats" and fig.interval.n == 2
        assert min(pooled) <= fig.interval.low <= fig.value <= fig.interval.high <= max(pooled)
    f, pooled = figures(0.02)
    for st in ("p50", "p90", "p99", "mean"):
        iv, v = f[f"ttft_s_{st}"].interval, f[f"ttft_s_{st}"].value
        assert 0.0 <= iv.low <= v <= iv.high, st
    assert f["ttft_s_p50"].interval.low == 0.0
    assert f["ttft_s_mean"].interval.method == "t_repeats"


def test_a_pooled_percentile_lies_inside_its_interval():
    """Two alike repeats of 5 requests, TTFT 1, 2, 3, 4 and 100 ms: each repeat's p90 is
    4 + 0.6 · 96 = 61.6 ms, the pooled 10 requests' p90 is 100 ms. The repeats agree (no spread),
    so an interval built around the repeats' p90s would be [61.6, 61.6] ms and miss the figure."""
    import record_consistency as rc

    from effbench.record import flatten

    rep = [RequestTrace(0.0, [ms / 1000, ms / 1000 + 0.01]) for ms in (1, 2, 3, 4, 100)]
    f = latency_figures([rep, rep], "test", tail=0)
    assert f["ttft_s_p90"].value == pytest.approx(0.1)
    assert formulas.percentile([0.001, 0.002, 0.003, 0.004, 0.1], 90) == pytest.approx(0.0616)
    iv = f["ttft_s_p90"].interval
    assert iv.low <= 0.1 <= iv.high
    rc.check_intervals({"cell": "alike", **flatten(f)})
