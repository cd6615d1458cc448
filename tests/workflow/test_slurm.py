"""The real pipeline on a real Slurm: `snakemake --profile profiles/slurm` on a single-node
cluster brought up on this machine (scripts/slurm-local.sh; Debian's slurm + munge).

What it shows: every non-local job goes through sbatch with the profile's partition and GPU
request; records name the Slurm job and have the local run's schema (and its numbers); a
second run submits nothing; an edited value resubmits only its cell; a failing job is
reported with its logs (after the profile's retry). The profile is the shipped one; the test
only shrinks its per-rule CPUs, memory and run time to the test node (derived from the
profile's own set-resources) and sets the partition/account variables the profile reads.
Every Snakemake call is bounded with `timeout -k`; the cluster is torn down even on failure.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from record_consistency import check_record_file
from workflow_helpers import ROOT, SNAKEMAKE, minimal_config, needs_pretrain_env

from effbench.record import read_records

SLURM_LOCAL = ROOT / "scripts" / "slurm-local.sh"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
HAVE_SLURM = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged"))

pytestmark = [
    needs_pretrain_env,
    pytest.mark.skipif(not HAVE_SLURM, reason="Slurm is not installed (slurmctld slurmd slurm-client munge): "
                       "run scripts/slurm-local.sh install as root; .ci/run does"),
    pytest.mark.skipif(os.geteuid() != 0, reason="bringing up a Slurm cluster needs root"),
]

# What the test node has room for (2 cores, the rest as the profile says).
TEST_SIZES = {"cpus_per_gpu": 1, "cpus_per_task": 1, "mem_mb": 2500, "runtime": 20}


def test_resources() -> list[str]:
    """The profile's own set-resources, shrunk to the test node: --set-resources entries."""
    profile = yaml.safe_load(PROFILE.read_text())
    out = []
    for rule, res in profile["set-resources"].items():
        for k, v in res.items():
            out.append(f"{rule}:{k}={TEST_SIZES.get(k, v)}")
    return out


test_resources.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def cluster():
    # The script's state folder (its default unless set): .ci/run's exit trap stops the same daemons.
    state = Path(os.environ.get("EFFBENCH_SLURM_DIR", "/tmp/effbench-slurm"))
    env = {**os.environ, "EFFBENCH_SLURM_DIR": str(state), "PYTHONPATH": "", "EFFBENCH_SLURM_ACCOUNT": "effbench-test",
           "EFFBENCH_SLURM_CPU_PARTITION": "gh200-debug"}  # light jobs elsewhere than GPU jobs
    env.pop("EFFBENCH_SLURM_GPU_PARTITION", None)  # the profile's default: gh200
    env.pop("SLURM_CONF", None)  # the job step drops it: the cluster's config is /etc/slurm/slurm.conf
    # a cluster left behind by a killed run is taken down first (down is idempotent)
    subprocess.run(["timeout", "-k", "5", "60", "bash", str(SLURM_LOCAL), "down"], env=env, capture_output=True)
    up = subprocess.run(["timeout", "-k", "5", "60", "bash", str(SLURM_LOCAL), "up"], env=env,
                        capture_output=True, text=True)
    try:
        assert up.returncode == 0, f"Slurm did not come up:\n{up.stdout}\n{up.stderr}"
        yield env
    finally:
        subprocess.run(["timeout", "-k", "5", "60", "bash", str(SLURM_LOCAL), "down"], env=env,
                       capture_output=True, text=True)  # the daemons' logs stay in the state folder


def slurm_snakemake(env: dict, workdir: Path, config: dict, *args: str, limit_s: int = 300,
                    check: bool = True) -> subprocess.CompletedProcess:
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = ["timeout", "-k", "10", str(limit_s), str(SNAKEMAKE), "--profile", "profiles/slurm",
           "-s", str(ROOT / "workflow" / "Snakefile"), "-d", str(workdir), "--configfile", str(cfg_path),
           "--slurm-init-seconds-before-status-checks", "2", *args, "--set-resources", *test_resources()]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit_s + 30)
    text = p.stdout + p.stderr
    assert p.returncode != 124, f"snakemake on Slurm ran past {limit_s} s:\n{text[-6000:]}"
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake on Slurm failed ({p.returncode}):\n{text[-8000:]}")
    return p


def submissions(output: str) -> list[tuple[str, str]]:
    """(slurm job id, slurm log path) of every sbatch Snakemake reported."""
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.", output)


def job_info(env: dict, jobid: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", jobid], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def rule_of(log: str) -> str:
    return re.search(r"slurm_logs/rule_(\w+)/", log).group(1)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm")
    config = minimal_config(work / "results", later_stages=False)  # pretraining cells are enough for Slurm
    p = slurm_snakemake(cluster, work, config)
    return work, config, p.stdout + p.stderr


def test_jobs_go_through_sbatch_with_the_profiles_partitions_and_gpus(cluster, slurm_run):
    work, _, out = slurm_run
    subs = submissions(out)
    rules = sorted(rule_of(log) for _, log in subs)
    # aggregation and the summary are localrules: never submitted
    assert rules == ["export_hf", "pretrain", "pretrain", "pretrain_data"], out[-4000:]
    for jobid, log in subs:
        info = job_info(cluster, jobid)
        assert info["JobState"] == "COMPLETED", info
        assert info["Account"] == "effbench-test"
        assert (work / log).exists() or Path(log).exists()  # kept: slurm-keep-successful-logs
        gpu_request = info.get("TresPerJob", "") + info.get("TresPerNode", "")
        if rule_of(log) == "pretrain":  # GPU count from pretrain.parallel, partition from the profile
            assert info["Partition"] == "gh200" and "gpu:1" in gpu_request, info
            assert info.get("CpusPerTres", "").startswith("gres:gpu:1") or info["NumCPUs"] == "1", info
        else:  # light steps: no GPU, the CPU partition variable
            assert info["Partition"] == "gh200-debug" and "gpu" not in gpu_request, info


def test_records_name_the_slurm_job_and_match_the_local_run(slurm_run, pipeline):
    work, config, out = slurm_run
    local_work, local_config, _ = pipeline
    jobs = {rule_of(log) + ":" + log.split("/")[-2]: jobid for jobid, log in submissions(out)}
    for t in ("mqa", "moe"):
        path = Path(config["results"]) / "pretrain" / "xs" / t / "record.parquet"
        local = Path(local_config["results"]) / "pretrain" / "xs" / t / "record.parquet"
        assert pq.read_schema(path) == pq.read_schema(local)  # one schema, metadata included
        r = check_record_file(path)  # TT, tokens/s, J/token, MFU, the window: tests/record_consistency.py
        (lr,) = read_records([local]).to_pylist()
        assert lr["slurm_job_id"] is None
        assert r["slurm_job_id"] == jobs[f"pretrain:xs_{t}"]
        assert r["slurm_node"] == socket.gethostname().split(".")[0]
        assert r["slurm_partition"] == "gh200"
        assert r["slurm_gpus"] in ("0", "1")  # the simulated GPU Slurm gave the job
        assert r["device_name"] == lr["device_name"]  # the same machine's device (NVML's GPU name on a GPU)
        assert r["settings_hash"] == lr["settings_hash"]
        assert r["steps"] == lr["steps"] and r["val_loss"] == pytest.approx(lr["val_loss"], rel=1e-4)
    summary = (Path(config["results"]) / "summary.md").read_text()
    assert all(f"`{jobs[f'pretrain:xs_{t}']}`" in summary for t in ("mqa", "moe"))  # provenance names the jobs


def test_a_second_run_submits_nothing(cluster, slurm_run):
    work, config, _ = slurm_run
    out = slurm_snakemake(cluster, work, config, limit_s=120)
    text = out.stdout + out.stderr
    assert submissions(text) == [] and "Nothing to be done" in text


def test_an_edited_value_resubmits_only_its_cell(cluster, slurm_run):
    work, config, _ = slurm_run
    edited = copy.deepcopy(config)
    edited["pretrain"]["techniques"]["moe"]["moe"]["aux_loss_coeff"] = 0.02
    p = slurm_snakemake(cluster, work, edited)
    subs = submissions(p.stdout + p.stderr)
    assert [log.split("slurm_logs/")[1].rsplit("/", 1)[0] for _, log in subs] == ["rule_pretrain/xs_moe"]
    config.update(edited)  # the cluster's results now follow the edited config


def test_a_failing_job_is_reported_with_its_log(cluster, slurm_run):
    work, config, _ = slurm_run
    broken = copy.deepcopy(config)
    # Valid config, fails at run time: the context is longer than the training split.
    broken["pretrain"]["sizes"]["xs"]["overrides"] = {"mqa": {"seq_length": 100_000}}
    p = slurm_snakemake(cluster, work, broken, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0
    subs = submissions(text)
    assert [rule_of(log) for _, log in subs] == ["pretrain", "pretrain"]  # the profile's one retry
    assert "Error in rule pretrain" in text
    slurm_log = subs[-1][1]
    assert slurm_log in text  # Snakemake names the job's Slurm log ...
    assert "logs/pretrain/xs/mqa.log" in text  # ... and the rule's log
    rule_log = Path(config["results"]) / "logs" / "pretrain" / "xs" / "mqa.log"
    assert "need at least 100001" in rule_log.read_text()
    assert "need at least 100001" in text  # show-failed-logs prints it
    check_record_file(Path(config["results"]) / "pretrain" / "xs" / "moe" / "record.parquet")  # the rest stays
