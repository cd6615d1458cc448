"""The real pipeline end to end on a minimal config, and what Snakemake re-runs after an edit.

Runs Snakemake's CLI (driver environment) over the real megatron-core stage (pretraining
environment): two variants, a few steps. The DAG assertions read Snakemake's own dry-run output.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from effbench.record import read_records

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PRETRAIN_PY = ROOT / ".venvs" / "pretrain" / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not PRETRAIN_PY.exists(), reason="the pretraining environment is missing: run bash scripts/setup.sh"
)


def minimal_config(results: Path) -> dict:
    c = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    c["results"] = str(results)
    c["data"]["pretrain"]["synthetic"].update(train_tokens=60_000, val_tokens=8_000)
    c["pretrain"]["grid"] = {"xs": ["mqa", "moe"]}
    c["pretrain"]["export_hf"] = ["mqa"]
    c["pretrain"]["training"].update(
        train_steps=6, warmup_steps=2, eval_batches=2, checkpoint_interval=3, warmup_measure_steps=1,
        micro_batch_size=4, global_batch_size=8,
    )
    # The serving axis on the exported model: bf16 and int4 (RTN), scored on two small offline
    # tasks, served by the transformers fallback (tests/inference runs vLLM itself).
    c["quantize"].update(models={"xs-mqa": {"pretrained": "xs/mqa"}}, precisions=["bf16", "int4"])
    c["quantize"]["int4"]["method"] = "rtn"
    c["eval"].update(tasks=["effbench_mc_fact", "effbench_mc_arithmetic"], local={"items_per_task": 16})
    c["inference"].update(engine="transformers", warmup_requests=1, repeats=1, load_points={
        "offline": {"mode": "offline", "requests": 4, "prompt_len": 16, "output_len": 8},
        "c1": {"mode": "concurrency", "concurrency": 1, "requests": 2, "prompt_len": 16, "output_len": 8},
    })
    return c


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "workflow" / "Snakefile"), "-d", str(workdir),
           "--configfile", str(cfg_path), "--cores", "2", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": ""})
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p


def planned_jobs(output: str) -> list[str]:
    """(rule, wildcards) of every job in a dry run, from Snakemake's own listing."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            jobs.append(rule)
        m = re.match(r"^\s*wildcards: (.*)$", line)
        if m and rule:
            jobs[-1] = f"{rule}[{m.group(1)}]"
    return sorted(jobs)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    config = minimal_config(work / "results")
    run = snakemake(work, config)
    return work, config, run


def test_records_tables_and_exports(pipeline):
    work, config, _ = pipeline
    res = Path(config["results"])
    records = read_records([res / "pretrain" / "xs" / t / "record.parquet" for t in ("mqa", "moe")]).to_pylist()
    assert [r["status"] for r in records] == ["ok", "ok"]
    for r in records:
        assert r["steps"] == 5 and r["tokens"] == 5 * 8 * 128
        assert r["ppl"] > 1 and r["val_loss"] > 0
        assert r["al_s_per_iter"] > 0 and r["tt_tokens_per_param_s"] > 0
        assert r["amu_gb"] > 0 and r["amu_gb__source"] in ("psutil_rss", "nvml_memory_used")
        if r["device_kind"] == "cpu" and r["aec_w"] is None:
            assert r["aec_w__missing"] and r["energy_j__missing"]  # missing, never 0
        assert r["mfu_frac"] is not None or r["mfu_frac__missing"]
    moe = next(r for r in records if r["technique"] == "moe")
    assert moe["params_active"] < moe["params_total"]  # only top-2 of 8 experts are active
    table = (res / "tables" / "pretrain.md").read_text()
    assert "mqa" in table and "moe" in table
    assert (res / "summary.md").exists()
    assert (res / "pretrain" / "xs" / "mqa" / "hf" / "model.safetensors").exists()
    log = (res / "logs" / "pretrain" / "xs" / "mqa.log").read_text()
    assert re.search(r"step \d+ of 6", log)  # progress reported in the rule's log


def test_serving_axis_end_to_end(pipeline):
    work, config, _ = pipeline
    res = Path(config["results"])
    quant = read_records([res / "quantize" / "xs-mqa" / p / "record.parquet" for p in ("bf16", "int4")]).to_pylist()
    assert [q["weight_bits"] for q in quant] == [16, 4] and quant[1]["disk_bytes"] < quant[0]["disk_bytes"]
    serve = read_records([res / "inference" / "xs-mqa" / p / lp / "record.parquet"
                          for p in ("bf16", "int4") for lp in ("offline", "c1")]).to_pylist()
    assert all(r["status"] == "ok" and r["engine"] == "transformers" for r in serve)
    assert [r["tokens"] for r in serve] == [32, 16, 32, 16]
    table = pd.read_csv(res / "tables" / "inference.csv")
    assert list(table["precision"]) == ["bf16", "int4"] and set(table["load_point"]) == {"offline"}
    assert table["accuracy"].notna().all() and table.iloc[0]["mcr_nominal"] == pytest.approx(1.0)
    assert table.iloc[1]["mcr_nominal"] == pytest.approx(4 * table.iloc[1]["accuracy"] / table.iloc[0]["accuracy"])
    tasks = pd.read_csv(res / "tables" / "inference_tasks.csv")
    assert set(tasks["task"]) == {"effbench_mc_fact", "effbench_mc_arithmetic"} and tasks["stderr"].notna().all()
    assert (res / "plots" / "inference_throughput_vs_latency.png").exists()
    assert (res / "plots" / "inference_accuracy_vs_it_tokens_per_s.png").exists()
    summary = (res / "summary.md").read_text()
    assert "Table 9" in summary and "Accuracy per task" in summary and "quantize" in summary


def test_a_serving_edit_reruns_only_what_depends_on_it(pipeline):
    work, config, _ = pipeline
    edited = copy.deepcopy(config)
    edited["inference"]["load_points"]["c1"]["requests"] = 3
    jobs = planned_jobs(snakemake(work, edited, "-n").stdout)
    assert jobs == sorted(["inference[model=xs-mqa, precision=bf16]", "inference[model=xs-mqa, precision=int4]",
                           "aggregate_inference", "summary", "all"]), jobs
    edited = copy.deepcopy(config)
    edited["quantize"]["int4"]["group_size"] = 64
    jobs = planned_jobs(snakemake(work, edited, "-n").stdout)
    assert jobs == sorted(["quantize[model=xs-mqa, precision=int4]", "evaluate[model=xs-mqa, precision=int4]",
                           "inference[model=xs-mqa, precision=int4]", "aggregate_quantize", "aggregate_inference",
                           "summary", "all"]), jobs


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
        ["pretrain[size=xs, technique=moe]", "aggregate_pretrain", "summary", "all"]
    ), text
    assert "Params have changed since last execution" in text
    # A shared training value touches every cell (and the export that depends on one).
    edited = copy.deepcopy(config)
    edited["pretrain"]["training"]["lr"] = 2e-3
    jobs = planned_jobs(snakemake(work, edited, "-n").stdout)
    assert jobs.count("pretrain[size=xs, technique=mqa]") == 1 and "export_hf[size=xs, technique=mqa]" in jobs
    assert "pretrain_data" not in jobs


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
    jobs = planned_jobs(snakemake(tmp_path, config, "-n").stdout)
    cells = [j for j in jobs if j.startswith("pretrain[")]
    assert len(cells) == 11
    for rule in ("quantize", "evaluate", "inference"):  # 9 models × bf16 / fp16 / int4
        assert len([j for j in jobs if j.startswith(rule + "[")]) == 27, rule
    assert "inference[model=qwen2.5-32b, precision=int4]" in jobs and "aggregate_inference" in jobs
    assert "pretrain[size=1.5b, technique=moe]" in cells and "pretrain[size=3b, technique=mla]" in cells
