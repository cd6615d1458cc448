"""Shared by the workflow tests: the minimal config, a Snakemake runner, the dry-run parser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PRETRAIN_PY = ROOT / ".venvs" / "pretrain" / "bin" / "python"
FINETUNE_PY = ROOT / ".venvs" / "finetune" / "bin" / "python"
SERVING_PYS = [ROOT / ".venvs" / s / "bin" / "python" for s in ("quantize", "inference")]

needs_pretrain_env = pytest.mark.skipif(
    not PRETRAIN_PY.exists(), reason="the pretraining environment is missing: run bash scripts/setup.sh"
)
needs_stage_envs = pytest.mark.skipif(
    not all(p.exists() for p in [PRETRAIN_PY, FINETUNE_PY, *SERVING_PYS]),
    reason="a stage environment is missing: run bash scripts/setup.sh",
)


def minimal_config(results: Path, later_stages: bool = True) -> dict:
    """Two pretraining variants for a few steps; with ``later_stages``, also two fine-tuning cells
    (LoRA, full) and the serving axis (bf16 and int4 by RTN, two offline tasks, the transformers
    engine: tests/inference runs vLLM itself) on the export."""
    c = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    c["results"] = str(results)
    c["data"]["pretrain"]["synthetic"].update(train_tokens=60_000, val_tokens=8_000)
    c["pretrain"]["grid"] = {"xs": ["mqa", "moe"]}
    c["pretrain"]["export_hf"] = ["mqa"]
    c["pretrain"]["training"].update(
        train_steps=6, warmup_steps=2, eval_batches=2, checkpoint_interval=3, warmup_measure_steps=1,
        micro_batch_size=4, global_batch_size=8,
    )
    if not later_stages:
        for section in ("finetune", "quantize", "eval", "inference"):
            c.pop(section, None)
        return c
    ft = c["finetune"]
    ft["models"] = {"xs-mqa": {"pretrained": "xs/mqa", "template": "default"}}
    ft["tasks"]["synthetic"].update(synthetic={"n_train": 32, "n_eval": 8}, exact_match_samples=8)
    ft["grid"] = [{"models": ["xs-mqa"], "methods": ["lora", "full"], "tasks": ["synthetic"]}]
    ft["training"].update(num_train_epochs=1, warmup_measure_steps=1)
    c["quantize"].update(models={"xs-mqa": {"pretrained": "xs/mqa"}}, precisions=["bf16", "int4"])
    c["quantize"]["int4"]["method"] = "rtn"
    c["eval"].update(tasks=["effbench_mc_fact", "effbench_mc_arithmetic"], local={"items_per_task": 16})
    c["inference"].update(engine="transformers", warmup_requests=1, repeats=1, load_points={
        "offline": {"mode": "offline", "requests": 4, "prompt_len": 16, "output_len": 8},
        "c1": {"mode": "concurrency", "concurrency": 1, "requests": 2, "prompt_len": 16, "output_len": 8},
    })
    return c


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True, repo: Path = ROOT) -> subprocess.CompletedProcess:
    """Snakemake on ``config`` in ``workdir``, with the workflow of ``repo`` (this checkout by default)."""
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [str(SNAKEMAKE), "-s", str(repo / "workflow" / "Snakefile"), "-d", str(workdir),
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
