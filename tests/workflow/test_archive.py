"""An archive made by the documented command (scripts/archive.sh), and one made by
`snakemake --archive`, unpack in a fresh folder and plan the whole pipeline there."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from workflow_helpers import ROOT, SNAKEMAKE, planned_jobs

# The embedded default's whole DAG: 5 pretraining cells, 5 exports (every architecture), 7 fine-tuning
# cells, 5 models × 2 precisions (and the GQA model at fp8 and int8, beyond the paper; its bf16 and fp8
# open loop) quantized, checked for fidelity, scored and served, the aggregations, the
# summary, the decision outputs and the report.
FULL_DAG = {
    "pretrain_data": 1, "pretrain": 5, "export_hf": 5, "aggregate_pretrain": 1,
    "finetune_data": 1, "finetune": 7, "aggregate_finetune": 1,
    "quantize": 12, "eval_tasks": 1, "evaluate": 12, "fidelity": 4, "fidelity_beyond_paper": 1, "inference": 12,
    "inference_open_loop": 2, "aggregate_quantize": 1,
    "aggregate_inference": 1,
    "summary": 1, "decision": 1, "report": 1, "all": 1,
}


def dry_run_in(folder: Path) -> str:
    p = subprocess.run(["timeout", "-k", "5", "120", str(SNAKEMAKE), "-n"], cwd=folder, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": ""})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")
    (top,) = [p for p in dest.iterdir() if p.is_dir()] or [dest]
    return top


def counts(jobs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in jobs:
        out[j.split("[")[0]] = out.get(j.split("[")[0], 0) + 1
    return out


def test_documented_archive_runs_its_dry_run_in_a_fresh_folder(tmp_path, pipeline):
    _, config, _ = pipeline
    out = tmp_path / "effbench.tar.gz"
    subprocess.run(["bash", str(ROOT / "scripts" / "archive.sh"), "-o", str(out), "--results", config["results"]],
                   check=True, capture_output=True, text=True, timeout=120)
    top = unpack(out, tmp_path / "fresh")
    assert not (top / ".venvs").exists() and not (top / ".git").exists()
    for f in ("workflow/Snakefile", "config/paper.yaml", "profiles/slurm/config.yaml", "envs/pretrain.yaml",
              "envs/pretrain.lock.txt", "envs/driver.lock.txt", "scripts/setup.sh", "VERSION"):
        assert (top / f).is_file(), f
    sums = (top / "SHA256SUMS").read_text()
    assert "results/pretrain/xs/mqa/record.parquet" in sums and "/resume/" not in sums
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=top, check=True, timeout=60)
    shutil.rmtree(top / "results")  # plan from scratch: the results were packed to be read, not re-used
    assert counts(planned_jobs(dry_run_in(top))) == FULL_DAG


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="snakemake --archive needs a git checkout")
def test_snakemake_archive_runs_its_dry_run_in_a_fresh_folder(tmp_path):
    out = tmp_path / "wf.tar.gz"
    p = subprocess.run(["timeout", "-k", "5", "120", str(SNAKEMAKE), "--archive", str(out)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert p.returncode == 0, p.stderr[-3000:]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with tarfile.open(out) as t:
        t.extractall(fresh, filter="data")
    assert (fresh / "envs" / "pretrain.yaml").exists() and (fresh / "envs" / "pretrain.lock.txt").exists()
    assert counts(planned_jobs(dry_run_in(fresh))) == FULL_DAG
