"""The isolation evidence: overlapping measured jobs see each other, sequential ones do not."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from effbench.isolation import REGISTRY_ENV, JobRegistration, registry_dir

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    """Each test's own job registry, also for the processes it starts (``$EFFBENCH_JOB_REGISTRY``,
    where run_cell's registration looks): the host's default registry holds whatever jobs other
    checkouts' tests and pipelines run on this machine, which would be seen as overlapping."""
    path = tmp_path / "job-registry"
    monkeypatch.setenv(REGISTRY_ENV, str(path))
    return path


def test_the_default_registry_is_the_environments(registry):
    with JobRegistration("a") as job:
        assert job.registry == registry == registry_dir() and job.path.parent == registry and job.path.exists()


def test_sequential_jobs_are_alone():
    with JobRegistration("a") as a:
        pass
    with JobRegistration("b") as b:
        pass
    assert a.columns()["alone"] and b.columns()["alone"]
    assert b.columns()["concurrent_jobs"] == 0 and json.loads(b.columns()["concurrent_jobs_json"]) == []


def test_a_job_in_another_process_during_the_window_is_seen():
    # A real second process registers (in the registry it inherits), works for a moment and ends
    # inside our window.
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(SRC)!r})
        from effbench.isolation import JobRegistration
        with JobRegistration("finetune/xs/lora"):
            time.sleep(0.3)
    """)
    with JobRegistration("pretrain/xs/gqa") as job:
        subprocess.run([sys.executable, "-c", child], check=True)
    cols = job.columns()
    assert cols["alone"] is False and cols["concurrent_jobs"] == 1
    assert json.loads(cols["concurrent_jobs_json"]) == ["finetune/xs/lora"]


def test_a_running_job_is_seen_and_a_dead_unstamped_one_only_if_it_started_inside(registry):
    registry.mkdir()
    now = time.time()
    # A live job (this test's own pid stands in for a running process) that started before us.
    (registry / "live.json").write_text(json.dumps({"cell": "live", "pid": 1, "started": now - 100, "ended": None}))
    # A job whose process is gone and never stamped its end, started long before: not counted.
    dead = registry / "dead.json"
    dead.write_text(json.dumps({"cell": "dead", "pid": 2**22 + 12345, "started": now - 100, "ended": None}))
    old = now - 50
    import os
    os.utime(dead, (old, old))
    with JobRegistration("me") as job:
        pass
    assert json.loads(job.columns()["concurrent_jobs_json"]) == ["live"]


def test_load_and_cpus_are_recorded():
    with JobRegistration("me") as job:
        pass
    cols = job.columns()
    assert cols["host_cpus"] >= 1
    assert cols["host_load_1m_start"] is not None and cols["host_load_1m_start"] >= 0


def test_a_reused_pid_is_not_taken_for_the_dead_job(registry):
    # A job killed long ago left its entry unstamped; its pid now belongs to another process (here
    # this test's own), which must not make the old job look alive.
    import os

    now = time.time()
    entry = {"cell": "killed", "pid": os.getpid(), "start_ticks": 1, "started": now - 100, "ended": None}
    registry.mkdir()
    stale = registry / "killed.json"
    stale.write_text(json.dumps(entry))
    os.utime(stale, (now - 50, now - 50))
    with JobRegistration("me") as job:
        pass
    assert job.columns()["alone"], job.columns()
