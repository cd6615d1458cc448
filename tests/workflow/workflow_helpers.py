"""Shared by the workflow tests: the minimal config, a Snakemake runner, the dry-run parser."""

from __future__ import annotations

import os
import re
import signal
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
    (LoRA, full) and the serving axis (bf16 and int4 by RTN, two offline tasks) on the export,
    served by vLLM as configured (this CPU's build has no int4 kernel: int4 falls back to
    transformers and its records say so; tests/quantize runs GPTQ and AWQ).

    Every measured stage runs on one thread, so that with ``--cores 2`` nothing but the
    ``host_share`` resource keeps two measured jobs (or a light one) from running side by side:
    the overlap test (test_pipeline.py) fails if that isolation breaks."""
    c = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    c["results"] = str(results)
    c["data"]["pretrain"]["synthetic"].update(train_tokens=60_000, val_tokens=8_000)
    c["pretrain"]["grid"] = {"xs": ["mqa", "moe"]}
    c["pretrain"]["export_hf"] = ["mqa"]
    c["pretrain"]["training"].update(
        train_steps=6, warmup_steps=2, eval_batches=2, checkpoint_interval=3, warmup_measure_steps=1,
        micro_batch_size=4, global_batch_size=8, threads=1,
    )
    if not later_stages:
        for section in ("finetune", "quantize", "eval", "inference"):
            c.pop(section, None)
        return c
    ft = c["finetune"]
    ft["models"] = {"xs-mqa": {"pretrained": "xs/mqa", "template": "default"}}
    ft["tasks"]["synthetic"].update(synthetic={"n_train": 32, "n_eval": 8}, exact_match_samples=8)
    ft["grid"] = [{"models": ["xs-mqa"], "methods": ["lora", "full"], "tasks": ["synthetic"]}]
    ft["training"].update(num_train_epochs=1, warmup_measure_steps=1, threads=1)
    c["quantize"].update(models={"xs-mqa": {"pretrained": "xs/mqa"}}, precisions=["bf16", "int4"], threads=1)
    c["quantize"]["int4"]["method"] = "rtn"
    c["eval"].update(tasks=["effbench_mc_fact", "effbench_mc_arithmetic"], local={"items_per_task": 16})
    c["inference"].update(engine="vllm", threads=1, warmup_requests=1, repeats=1, load_points={
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
    # The run's own job registry: the records' `alone` then speaks of this pipeline's jobs, not of
    # another checkout's tests on the same host (foreign load is in host_load_1m_*).
    registry = workdir.parent / f"{workdir.name}.job-registry"
    env = {**os.environ, "PYTHONPATH": "", "EFFBENCH_JOB_REGISTRY": str(registry)}
    # Its own process group: on a timeout the jobs die with Snakemake (killing Snakemake alone left a
    # job's shell and stage script running, to write a record into a run already given up).
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=2400)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    p = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
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
