"""The real pipeline end to end on a minimal config, and what Snakemake re-runs after an edit.

Runs Snakemake's CLI (driver environment) over the real megatron-core stage (pretraining
environment): two variants, a few steps. The DAG assertions read Snakemake's own dry-run output.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from record_consistency import (
    check_int4_size,
    check_intervals,
    check_record_file,
    check_trainable,
    model_params,
    safetensors_payload_bytes,
)
from workflow_helpers import ROOT, minimal_config, needs_stage_envs, planned_jobs, snakemake

from effbench.record import read_records

pytestmark = needs_stage_envs


PNG = b"\x89PNG\r\n\x1a\n"


def has_row(markdown: str, *keys: str) -> bool:
    """Whether a Markdown table row starts with these key cells; the first may carry a note mark
    ([S] when the machine was loaded during the cell's window, [F] for a fallback engine)."""
    first, *rest = (re.escape(k) for k in keys)
    return re.search(r"^\| " + first + r"(?: \[[A-Z]\])? \| " + r" \| ".join(rest) + r" \|", markdown, re.M) is not None


def test_records_tables_and_exports(pipeline):
    work, config, _ = pipeline
    res = Path(config["results"])
    records = [check_record_file(res / "pretrain" / "xs" / t / "record.parquet") for t in ("mqa", "moe")]
    for r in records:  # TT, tokens/s, J/token, MFU, the window: tests/record_consistency.py
        assert r["steps"] == 5 and r["tokens"] == 5 * 8 * 128
        assert r["ppl"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-12)
        assert r["amu_gb"] <= r["peak_mem_gb"] and r["amu_gb__source"].split("+")[0] in (
            "psutil_pss", "psutil_uss", "psutil_rss", "nvml_memory_used")
        for x in ("al_s_per_iter", "tt_tokens_per_param_s", "tokens_per_s", "amu_gb"):  # 5 steps: 5 batch means
            assert r[x + "__ci_low"] <= r[x] <= r[x + "__ci_high"] and r[x + "__ci_n"] == 5, x
    mqa, moe = records
    assert moe["params_active"] < moe["params_total"]  # only top-2 of 8 experts are active
    hf = res / "pretrain" / "xs" / "mqa" / "hf"
    # the export holds the trained model: its config's analytic count is the record's
    assert model_params(json.loads((hf / "config.json").read_text())) == mqa["params_total"]
    table = pd.read_csv(res / "tables" / "pretrain.csv")
    assert sorted(table["technique"]) == ["moe", "mqa"]
    assert has_row((res / "summary.md").read_text(), "xs", "mqa")  # the table is embedded in the summary
    log = (res / "logs" / "pretrain" / "xs" / "mqa.log").read_text()
    assert re.search(r"step \d+ of 6", log)  # progress reported in the rule's log


def test_finetune_cells_run_llamafactory_on_the_pipelines_own_export(pipeline):
    work, config, _ = pipeline
    res = Path(config["results"])
    methods = ("lora", "full")
    records = [check_record_file(res / "finetune" / "xs-mqa" / "synthetic" / m / "record.parquet") for m in methods]
    model_config = json.loads((res / "pretrain" / "xs" / "mqa" / "hf" / "config.json").read_text())
    for m, r in zip(methods, records):
        assert r["steps"] == 3 and r["samples"] == 24  # 32 samples / batch 8 = 4 steps, 1 of warm-up
        check_trainable(r, model_config, config["finetune"]["methods"][m])  # LoRA: r × (in + out) per target
        assert (r["accuracy"] * 8).is_integer()  # exact match on 8 held-out items
        for x in ("al_s_per_iter", "st_samples_per_param_s", "tokens_per_s"):  # 3 measured steps: 3 batch means
            assert r[x + "__ci_low"] <= r[x] <= r[x + "__ci_high"] and r[x + "__ci_n"] == 3, x
    lora, full = records
    adapter = res / "finetune" / "xs-mqa" / "synthetic" / "lora" / "adapter" / "adapter_model.safetensors"
    assert safetensors_payload_bytes(adapter) == 4 * lora["params_trainable"]  # the trained tensors, fp32
    assert lora["disk_bytes"] < full["disk_bytes"]  # an adapter against a whole model
    table = (res / "tables" / "finetune.md").read_text()
    assert has_row(table, "xs-mqa", "synthetic", "lora") and has_row(table, "xs-mqa", "synthetic", "full")
    summary = (res / "summary.md").read_text()
    assert all(r["val_loss"] > 0 for r in records)  # the held-out loss: the quality the leaderboard ranks
    for x in ("amu_gb", "al_s_per_iter"):
        png = res / "plots" / f"finetune_val_loss_vs_{x}.png"
        assert png.read_bytes()[:8] == PNG and f"plots/{png.name}" in summary


def test_serving_axis_end_to_end(pipeline):
    work, config, _ = pipeline
    res = Path(config["results"])
    quant = [check_record_file(res / "quantize" / "xs-mqa" / p / "record.parquet") for p in ("bf16", "int4")]
    assert [q["weight_bits"] for q in quant] == [16, 4]
    model_config = json.loads((res / "pretrain" / "xs" / "mqa" / "hf" / "config.json").read_text())
    served = {p: res / "quantize" / "xs-mqa" / p / "model" / "model.safetensors" for p in ("bf16", "int4")}
    assert safetensors_payload_bytes(served["bf16"]) == 2 * model_params(model_config)
    check_int4_size(served["int4"], model_config, config["quantize"]["int4"]["group_size"])
    serve = {(p, lp): check_record_file(res / "inference" / "xs-mqa" / p / lp / "record.parquet")
             for p in ("bf16", "int4") for lp in ("offline", "c1")}
    assert {k: r["tokens"] for k, r in serve.items()} == {
        ("bf16", "offline"): 32, ("bf16", "c1"): 16, ("int4", "offline"): 32, ("int4", "c1"): 16}
    for (p, _), r in serve.items():
        assert r["disk_bytes"] == served[p].stat().st_size
        if p == "bf16":  # vLLM serves bf16 under Snakemake, as configured
            assert r["engine"] == "vllm" and r["engine_fallback"] is None and r["running_peak"] == r["batch_size"]
        elif r["engine"] == "transformers":  # this CPU's vLLM build has no int4 kernel: said, not hidden
            assert "no int4 (W4A16) kernel" in r["engine_fallback"]
        else:
            assert r["engine"] == "vllm" and r["engine_fallback"] is None
    table = pd.read_csv(res / "tables" / "inference.csv")
    assert list(table["precision"]) == ["bf16", "int4"] and set(table["load_point"]) == {"offline"}
    tasks = pd.read_csv(res / "tables" / "inference_tasks.csv")
    assert set(tasks["task"]) == {"effbench_mc_fact", "effbench_mc_arithmetic"} and tasks["stderr"].notna().all()
    summary = (res / "summary.md").read_text()
    plots = ["inference_throughput_vs_latency.png"]
    # Perf averages only the tasks measurable at the baseline (docs/quality.md): 6 pretraining steps
    # and 16 items a task leave the minimal run's model at chance, so Perf, MCR and the drop are
    # "not measurable" unless a task cleared its chance and control.
    measurable = tasks[(tasks["precision"] == "bf16") & tasks["in_perf"].astype(bool)]
    if measurable.empty:
        assert table["accuracy"].isna().all() and table["mcr_nominal"].isna().all()
        assert "not measurable" in (res / "tables" / "inference.md").read_text()
    else:
        plots.append("inference_accuracy_vs_it_tokens_per_s.png")
        assert table["accuracy"].notna().all() and table.iloc[0]["mcr_nominal"] == pytest.approx(1.0)
        assert table.iloc[1]["mcr_nominal"] == pytest.approx(4 * table.iloc[1]["accuracy"] / table.iloc[0]["accuracy"])
        assert set(table.iloc[0]["perf_tasks"].split(", ")) == set(measurable["task"])
    for name in plots:
        assert (res / "plots" / name).read_bytes()[:8] == PNG and f"plots/{name}" in summary
    assert "Table 9" in summary and "Accuracy per task" in summary and "quantize" in summary


def test_a_serving_edit_reruns_only_what_depends_on_it(pipeline):
    work, config, _ = pipeline
    edited = copy.deepcopy(config)
    edited["inference"]["load_points"]["c1"]["requests"] = 3
    jobs = planned_jobs(snakemake(work, edited, "-n").stdout)
    assert jobs == sorted(["inference[model=xs-mqa, precision=bf16]", "inference[model=xs-mqa, precision=int4]",
                           "aggregate_inference", "summary", "decision", "report", "all"]), jobs
    edited = copy.deepcopy(config)
    edited["quantize"]["int4"]["group_size"] = 64
    jobs = planned_jobs(snakemake(work, edited, "-n").stdout)
    assert jobs == sorted(["quantize[model=xs-mqa, precision=int4]", "evaluate[model=xs-mqa, precision=int4]",
                           "fidelity[model=xs-mqa]", "inference[model=xs-mqa, precision=int4]",
                           "aggregate_quantize", "aggregate_inference", "summary", "decision", "report", "all"]), jobs


def test_second_run_does_nothing(pipeline):
    work, config, _ = pipeline
    out = snakemake(work, config, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_a_changed_value_reruns_only_its_cells(pipeline):
    work, config, _ = pipeline
    edited = copy.deepcopy(config)
    edited["pretrain"]["techniques"]["moe"]["moe"]["aux_loss_coeff"] = 0.02
    out = snakemake(work, edited, "-n")
    text = out.stdout + out.stderr
    assert planned_jobs(text) == sorted(
        ["pretrain[size=xs, technique=moe]", "aggregate_pretrain", "summary", "decision", "report", "all"]
    ), text
    assert "Params have changed since last execution" in text
    # A shared training value touches every cell (and the export that depends on one).
    edited = copy.deepcopy(config)
    edited["pretrain"]["training"]["lr"] = 2e-3
    jobs = planned_jobs(snakemake(work, edited, "-n").stdout)
    assert jobs.count("pretrain[size=xs, technique=mqa]") == 1 and "export_hf[size=xs, technique=mqa]" in jobs
    assert "pretrain_data" not in jobs


def test_a_changed_method_setting_reruns_only_that_methods_cells(pipeline):
    work, config, _ = pipeline
    edited = copy.deepcopy(config)
    edited["finetune"]["methods"]["lora"]["lora_rank"] = 4
    text = "".join(snakemake(work, edited, "-n").stdout)
    assert planned_jobs(text) == sorted(
        ["finetune[model=xs-mqa, task=synthetic, method=lora]", "aggregate_finetune", "summary", "decision", "report", "all"]
    ), text


def test_missing_finetune_model_path_stops_a_real_run_but_not_a_dry_run(tmp_path):
    config = minimal_config(tmp_path / "results")
    config["finetune"]["models"]["local"] = {"path": str(tmp_path / "no-model"), "template": "llama3"}
    config["finetune"]["grid"][0]["models"].append("local")
    dry = snakemake(tmp_path, config, "-n")
    text = dry.stdout + dry.stderr
    assert "config key `finetune.models.local.path`" in text
    assert "finetune[model=local, task=synthetic, method=lora]" in planned_jobs(dry.stdout)
    real = snakemake(tmp_path, config, check=False)
    assert real.returncode != 0
    assert "config key `finetune.models.local.path`" in real.stdout + real.stderr
    assert not (tmp_path / "results").exists()  # nothing started


def test_unknown_finetune_method_stops_before_any_job(tmp_path):
    config = minimal_config(tmp_path / "results")
    config["finetune"]["grid"][0]["methods"].append("qlora")
    p = snakemake(tmp_path, config, "-n", check=False)
    assert p.returncode != 0
    assert "config key `finetune.grid.0.methods`: unknown method 'qlora'" in p.stdout + p.stderr


def test_missing_data_path_stops_a_real_run_but_not_a_dry_run(tmp_path):
    config = minimal_config(tmp_path / "results")
    config["data"]["pretrain"] = {
        "source": "shards",
        "shards": {"path": str(tmp_path / "nowhere"), "tokenizer": str(tmp_path / "no-tokenizer")},
    }
    dry = snakemake(tmp_path, config, "-n")
    text = dry.stdout + dry.stderr
    assert "config key `data.pretrain.shards.path`" in text and "pretrain_data" in text
    real = snakemake(tmp_path, config, check=False)
    assert real.returncode != 0
    assert "config key `data.pretrain.shards.path`" in real.stdout + real.stderr
    assert not (tmp_path / "results").exists()  # nothing started


def test_bad_config_stops_before_any_job(tmp_path):
    config = minimal_config(tmp_path / "results")
    config["pretrain"]["grid"] = {"xs": ["mqa", "nsa"]}
    p = snakemake(tmp_path, config, "-n", check=False)
    assert p.returncode != 0
    assert "config key `pretrain.grid.xs`: unknown technique 'nsa'" in p.stdout + p.stderr


def test_paper_config_builds_the_full_grid_in_a_dry_run(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    p = snakemake(tmp_path, config, "-n")
    jobs, out = planned_jobs(p.stdout), p.stdout + p.stderr
    cells = [j for j in jobs if j.startswith("pretrain[")]
    # mqa, gqa, mla at 3 sizes; nsa at 0.5B and 1.5B; moe at 0.5B and 1.5B (sharded); abs, sinusoidal, relative, nope at 1.5B; Table 6's
    # pythia, mamba, rwkv at 0.5B and 1.5B, each with its planned memory in the plan's report
    assert len(cells) == 23
    assert "pretrain[size=1.5b, technique=moe]" in cells and "pretrain[size=3b, technique=mla]" in cells
    assert "pretrain[size=1.5b, technique=abs]" in cells and "pretrain[size=1.5b, technique=nope]" in cells
    for t in ("pythia", "mamba", "rwkv"):
        assert f"pretrain[size=1.5b, technique={t}]" in cells and f"pretrain[size=0.5b, technique={t}]" in cells
        assert re.search(rf"1\.5b/{t}: [\d.]+ of 96 GB", out), t
    ft = [j for j in jobs if j.startswith("finetune[")]
    assert len(ft) == 7 * 7 * 2  # models × methods × datasets
    assert "finetune[model=qwen2.5-14b, task=openo1, method=rslora]" in ft
    assert "finetune[model=mistral-small-24b, task=medical-o1, method=full]" in ft
    assert "aggregate_finetune" in jobs
    for rule in ("quantize", "evaluate", "inference"):  # 9 models × bf16 / fp16 / int4, and fp8 / int8
        assert len([j for j in jobs if j.startswith(rule + "[")]) == 45, rule
    assert len([j for j in jobs if j.startswith("inference_open_loop[")]) == 2 * 5  # two models' open loop
    assert "inference[model=qwen2.5-32b, precision=int4]" in jobs and "aggregate_inference" in jobs


def test_multi_process_layout_launches_torchrun_and_asks_for_its_gpus(tmp_path):
    config = minimal_config(tmp_path / "results")
    config["pretrain"]["parallel"] = {"nodes": 1, "gpus_per_node": 2}
    out = snakemake(tmp_path, config, "-n", "-p").stdout
    assert "-m effbench.torchrun --standalone --nnodes=1 --nproc-per-node=2" in out
    pretrain_resources = re.findall(r"rule pretrain:(?:\n(?!\S).*)*?\n\s+resources: (.*)", out)
    assert len(pretrain_resources) == 2 and all("gpu=2" in r for r in pretrain_resources)


def test_finetune_gpus_launch_torchrun_and_ask_for_their_gpus(tmp_path):
    """finetune.parallel.gpus: torchrun with one LlamaFactory process per GPU and the same GPU
    request, per cell (a model's own gpus wins); one GPU: the interpreter alone."""
    config = minimal_config(tmp_path / "results")
    config["finetune"]["parallel"] = {"gpus": 2}
    config["finetune"]["models"]["xs-mqa"]["gpus"] = 3
    config["finetune"]["models"]["xs-mqa-one"] = {"pretrained": "xs/mqa", "template": "default", "gpus": 1}
    config["finetune"]["grid"][0]["models"].append("xs-mqa-one")
    out = snakemake(tmp_path, config, "-n", "-p").stdout
    jobs = re.findall(r"\nrule finetune:\n((?:\s+.*\n)+?)\s+resources: (.*)\n((?:.*\n)+?)\n", out)
    by_model = {re.search(r"model=([\w.-]+)", w).group(1): (res, cmd) for w, res, cmd in jobs if "method=lora" in w}
    res, cmd = by_model["xs-mqa"]
    assert "gpu=3" in res and "-m effbench.torchrun --standalone --nnodes=1 --nproc-per-node=3" in cmd
    res, cmd = by_model["xs-mqa-one"]
    assert "gpu=1" in res and "effbench.torchrun" not in cmd and "finetune.py" in cmd


def test_paper_config_on_the_slurm_profile(tmp_path):
    """Every paper cell with its partition and GPU request; no GPU on a light step."""
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    out = snakemake(tmp_path, config, "-n", "--profile", str(ROOT / "profiles" / "slurm")).stdout
    jobs = re.findall(r"\n(?:local)?rule (\w+):\n((?:\s+.*\n)+?)\s+resources: (.*)", out)
    cells = [(rule, res) for rule, _, res in jobs if rule == "pretrain"]
    assert len(cells) == 23
    assert all("slurm_partition=gh200" in r and "gpu=4" in r and "cpus_per_gpu=" in r for _, r in cells)
    ft = [(rule, res) for rule, _, res in jobs if rule == "finetune"]
    assert len(ft) == 98 and all("slurm_partition=gh200" in r and "gpu=4" in r for _, r in ft)  # finetune.parallel
    for rule in ("quantize", "evaluate", "fidelity", "inference", "inference_open_loop"):
        serving = [res for r, _, res in jobs if r == rule]
        # fidelity: one job per model (its 5 precisions); open loop: 2 models × 5 precisions
        cells = {"fidelity": 9, "inference_open_loop": 10}.get(rule, 45)
        assert len(serving) == cells and all("slurm_partition=gh200" in r and "gpu=1" in r for r in serving), rule
    measured = [res for r, _, res in jobs if r in ("pretrain", "finetune", "quantize", "inference", "inference_open_loop")]
    assert all("slurm_extra=--exclusive" in r for r in measured)  # a timed job has its node to itself
    light = [(rule, res) for rule, _, res in jobs if rule not in ("pretrain", "finetune", "quantize", "evaluate",
                                                                   "fidelity", "inference", "inference_open_loop")]
    assert {rule for rule, _ in light} >= {"pretrain_data", "finetune_data", "aggregate_pretrain", "summary"}
    assert not any("gpu" in r for _, r in light)


def test_no_two_timed_runs_overlapped(pipeline):
    """Measured jobs hold the whole host (host_share): no two records' windows may intersect,
    and each record says it ran alone. The minimal config runs every job on one thread with
    --cores 2, so without host_share Snakemake would start two ready cells at once (the two
    pretraining cells are ready together) and this fails."""
    work, config, _ = pipeline
    res = Path(config["results"])
    paths = sorted(p for stage in ("pretrain", "finetune", "quantize", "inference")
                   for p in (res / stage).rglob("record.parquet"))
    records = read_records(paths).to_pylist()
    assert len(records) == 2 + 2 + 2 + 4  # every timed cell of the minimal config
    spans = sorted((r["started_at"], r["ended_at"], r["cell"]) for r in records)
    for (s0, e0, a), (s1, e1, b) in zip(spans, spans[1:]):
        assert e0 <= s1, f"{a} ({s0}–{e0}) overlapped {b} ({s1}–{e1})"
    assert all(r["alone"] and r["concurrent_jobs"] == 0 for r in records), \
        [(r["cell"], r["concurrent_jobs_json"]) for r in records if not r["alone"]]


def test_every_interval_of_the_run_holds_its_figure(pipeline):
    """Across every record and every table the minimal pipeline wrote: each figure lies inside its
    own 95 % interval, and no interval of a figure that cannot be negative reaches below 0
    (tests/record_consistency.py::check_intervals, the same check every stage test applies)."""
    work, config, _ = pipeline
    res = Path(config["results"])
    records = read_records(sorted(res.rglob("record.parquet"))).to_pylist()
    assert len(records) >= 10
    tables = sorted((res / "tables").glob("*.csv")) + sorted((res / "leaderboard").glob("*.csv"))
    with_intervals = 0
    for path in tables:
        frame = pd.read_csv(path)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        for i, row in enumerate(rows):
            check_intervals({"cell": f"{path.name} row {i}", **row})
        with_intervals += any(c.endswith("__ci_low") for c in frame.columns)
    assert with_intervals >= 3, [p.name for p in tables]  # pretraining, fine-tuning and serving tables at least
    for r in records:
        check_intervals(r)
