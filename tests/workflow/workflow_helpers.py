"""Shared by the workflow tests: the minimal config, a Snakemake runner, the dry-run parser."""

from __future__ import annotations

import json
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
    c["quantize"].pop("beyond_paper", None)  # fp8/int8 and the open-loop points: their own stage tests
    c["inference"].pop("open_loop", None)
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


# Run by the driver's interpreter in a fresh process: Snakemake's Python API plans the DAG as
# `snakemake -n --cores 2` does and prints what the scheduler would hold each job to.
_DAG_RESOURCES = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

snakefile, workdir, configfile = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with SnakemakeApi(OutputSettings(dryrun=True, quiet={Quietness.ALL})) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=2), snakefile=Path(snakefile), workdir=workdir,
                      config_settings=ConfigSettings(configfiles=[Path(configfile)] if configfile else []))
    wf.dag(DAGSettings()).execute_workflow(executor="dryrun")
    workflow = wf._workflow  # the API exposes no accessor for these two
    total = {k: getattr(v, "value", v) for k, v in dict(workflow.global_resources).items()}
    jobs = [(j.rule.name, dict(j.wildcards), {k: v for k, v in dict(j.resources).items()}) for j in workflow.dag.jobs]
print("DAG-RESOURCES " + json.dumps({"total": total, "jobs": jobs}, default=str))
"""


def dag_resources(workdir: Path, config: dict | None = None) -> tuple[dict, list[tuple[str, dict, dict]]]:
    """The resources a local run under ``--cores 2`` provides (the workflow's own registrations
    included) and every planned job's (rule, wildcards, resources), as Snakemake's scheduler sees
    them: a dry run through Snakemake's Python API in a fresh process (nothing runs). ``config``
    None plans the embedded default (no --configfile, as the README's command)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = ""
    if config is not None:
        cfg_path = str(workdir / "config.yaml")
        Path(cfg_path).write_text(yaml.safe_dump(config))
    python = SNAKEMAKE.read_text().splitlines()[0].removeprefix("#!").strip()  # Snakemake's interpreter
    p = subprocess.run([python, "-c", _DAG_RESOURCES, str(ROOT / "workflow" / "Snakefile"), str(workdir), cfg_path],
                       capture_output=True, text=True, timeout=300, cwd=workdir, env={**os.environ, "PYTHONPATH": ""})
    lines = [x for x in p.stdout.splitlines() if x.startswith("DAG-RESOURCES ")]
    if p.returncode != 0 or not lines:
        raise AssertionError(f"dry run through the API failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-6000:]}")
    out = json.loads(lines[-1].removeprefix("DAG-RESOURCES "))
    return out["total"], [tuple(j) for j in out["jobs"]]


def planned_resources(output: str) -> list[tuple[str, str, dict[str, str]]]:
    """(rule, wildcards, resources) of every job `snakemake -n` listed, from its `resources:` lines."""
    jobs: list[tuple[str, str, dict[str, str]]] = []
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            jobs.append((m.group(1), "", {}))
        m = re.match(r"^\s+wildcards: (.*)$", line)
        if m and jobs:
            jobs[-1] = (jobs[-1][0], m.group(1), jobs[-1][2])
        m = re.match(r"^\s+resources: (.*)$", line)
        if m and jobs:
            jobs[-1][2].update(kv.split("=", 1) for kv in m.group(1).split(", "))
    return jobs
