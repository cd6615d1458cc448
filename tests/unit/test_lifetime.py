"""A stage process dies with the shell that runs it, and with the Snakemake that started that
shell (the orphaned-job faults: docs/faults.md, "Orphaned jobs").

Real processes throughout. Waits poll a condition (every 0.1 s, up to 30 s): the machine is
shared and loaded, so no test depends on how fast a process starts or dies. The stand-in stage
writes its "record" only when the test releases it, so whether it could write one never depends
on timing either.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import poll, process_alive

SRC = Path(__file__).resolve().parents[2] / "src"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG and /proc are Linux-only")

# The stand-in stage: arms what the stage scripts arm (or not), says it runs, then writes its
# record once the test releases it.
CHILD = """
import os, sys, time
sys.path.insert(0, {src!r})
from effbench import lifetime
{arm}
open({pidfile!r} + ".tmp", "w").write(str(os.getpid()))
os.replace({pidfile!r} + ".tmp", {pidfile!r})
while not os.path.exists({release!r}):
    time.sleep(0.05)
open({record!r}, "w").write("record")  # what a stage writes when its work is done
"""

# A torchrun-like launcher between the shell and the stage: arms the same, then runs the stage.
LAUNCHER = """
import os, subprocess, sys
sys.path.insert(0, {src!r})
from effbench import lifetime
{arm}
sys.exit(subprocess.call([sys.executable, "-c", os.environ["CODE"]]))
"""

# A stand-in Snakemake: a process whose command is `snakemake`, running the job's shell as
# Snakemake's shell() does (Popen, shell=True, bash, `set -euo pipefail; ...`) and waiting for it.
FAKE_SNAKEMAKE = """
import subprocess, sys
job = "set -euo pipefail; " + sys.argv[1]
sys.exit(subprocess.Popen(job, shell=True, executable="/bin/bash").wait())
"""




def _gone(pid: int) -> bool:
    return poll(lambda: not process_alive(pid))


class Stage:
    """The stand-in stage's files under ``tmp``."""

    def __init__(self, tmp: Path, arm: str) -> None:
        self.pidfile, self.release, self.record = tmp / "pid", tmp / "release", tmp / "record.parquet"
        self.code = CHILD.format(src=str(SRC), pidfile=str(self.pidfile), release=str(self.release),
                                 record=str(self.record), arm=arm)

    def pid(self) -> int:
        assert poll(lambda: self.pidfile.exists()), "the stand-in stage never started"
        return int(self.pidfile.read_text())

    def finish(self) -> None:
        self.release.write_text("go")


def _run_and_kill_wrapper(tmp_path: Path, arm: str) -> tuple[int, Stage]:
    stage = Stage(tmp_path, arm)
    # The rule's shell wrapper: bash runs python (not exec'd), as Snakemake's shell jobs do.
    wrapper = subprocess.Popen(["bash", "-c", f'{sys.executable} -c "$CODE" > /dev/null 2>&1; true'],
                               env={**os.environ, "CODE": stage.code})
    child = stage.pid()
    wrapper.send_signal(signal.SIGKILL)
    wrapper.wait()
    return child, stage


@linux_only
def test_the_work_dies_with_its_wrapper_and_writes_no_record(tmp_path):
    child, stage = _run_and_kill_wrapper(tmp_path, arm="lifetime.die_with_parent()")
    assert _gone(child), "the stage process outlived its job's shell"
    stage.finish()
    assert not stage.record.exists()


@linux_only
def test_without_it_the_orphan_writes_its_record(tmp_path):
    # The fault as found: this is what the fix prevents (keeps the test above honest).
    child, stage = _run_and_kill_wrapper(tmp_path, arm="")
    try:
        assert process_alive(child)
        stage.finish()
        assert poll(lambda: stage.record.exists()), "the orphan should have written its record"
    finally:
        stage.finish()


def _run_under_fake_snakemake(tmp_path: Path, arm: str, launcher: bool = False,
                              name: str = "snakemake") -> tuple[subprocess.Popen, int, Stage]:
    stage = Stage(tmp_path, arm)
    tool = tmp_path / "bin" / name
    tool.parent.mkdir()
    tool.write_text(FAKE_SNAKEMAKE)
    env = {**os.environ, "CODE": stage.code}
    if launcher:
        env["LAUNCHER"] = LAUNCHER.format(src=str(SRC), arm=arm)
        job = f'{sys.executable} -c "$LAUNCHER" > {tmp_path}/job.log 2>&1'
    else:
        job = f'{sys.executable} -c "$CODE" > {tmp_path}/job.log 2>&1'
    fake = subprocess.Popen([sys.executable, str(tool), job], env=env)
    return fake, stage.pid(), stage


@linux_only
@pytest.mark.parametrize("launcher", [False, True], ids=["stage", "stage-under-launcher"])
def test_the_work_dies_with_the_snakemake_that_started_its_shell(tmp_path, launcher):
    # Snakemake killed with SIGKILL: its job's shell lives on (re-parented to init), and so did
    # the stage; now the stage (or the launcher between, taking the stage with it) ends too.
    fake, child, stage = _run_under_fake_snakemake(tmp_path, "lifetime.die_with_parent()", launcher)
    try:
        fake.send_signal(signal.SIGKILL)
        fake.wait()
        assert _gone(child), "the stage outlived the Snakemake that started its job"
        stage.finish()
        assert not stage.record.exists()
        assert "the Snakemake that started this job (pid %d) is gone" % fake.pid in (tmp_path / "job.log").read_text()
    finally:
        stage.finish()


@linux_only
def test_without_the_watch_the_job_outlives_snakemake(tmp_path):
    # The fault as found (issue #24): the parent-death signal alone (what every stage armed) does
    # not fire, since the stage's parent, the job's shell, survives its Snakemake.
    fake, child, stage = _run_under_fake_snakemake(tmp_path, "lifetime.arm_pdeathsig()")
    try:
        fake.send_signal(signal.SIGKILL)
        fake.wait()
        time.sleep(1.0)  # the fixed stage would be gone by now on an idle machine; here it stays
        assert process_alive(child)
        stage.finish()
        assert poll(lambda: stage.record.exists()), "the orphan should have written its record"
    finally:
        stage.finish()


@linux_only
def test_a_shell_started_by_anything_but_snakemake_is_not_watched(tmp_path):
    # What started the shell is watched only if it is a Snakemake: under Slurm that is the step's
    # own Snakemake, which waits for its job; a terminal or another tool that exits while the job
    # runs (here: the shell's parent exits at once) leaves a healthy job alone.
    stage = Stage(tmp_path, "lifetime.die_with_parent()")
    job = f'set -euo pipefail; {sys.executable} -c "$CODE" > {tmp_path}/job.log 2>&1'
    starter = f"import subprocess; subprocess.Popen({['bash', '-c', job]!r})"
    subprocess.run([sys.executable, "-c", starter], env={**os.environ, "CODE": stage.code}, check=True)
    child = stage.pid()
    try:
        time.sleep(1.0)
        assert process_alive(child), "a job whose shell's starter exited was killed"
        stage.finish()
        assert poll(lambda: stage.record.exists())
    finally:
        stage.finish()
