"""A stage process dies with the shell that runs it (the orphaned-record fault)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

CHILD = """
import sys, time
sys.path.insert(0, {src!r})
from effbench.lifetime import die_with_parent
{arm}
open({pidfile!r}, "w").write(str(__import__("os").getpid()))
time.sleep(3)
open({record!r}, "w").write("record")  # what a stage writes when its work is done
"""


def _run_and_kill_wrapper(tmp_path: Path, arm: bool) -> tuple[int, Path]:
    pidfile, record = tmp_path / "pid", tmp_path / "record.parquet"
    code = CHILD.format(src=str(SRC), pidfile=str(pidfile), record=str(record), arm="die_with_parent()" if arm else "")
    # The rule's shell wrapper: bash runs python (not exec'd), as Snakemake's shell jobs do.
    wrapper = subprocess.Popen(["bash", "-c", f'{sys.executable} -c "$CODE" > /dev/null 2>&1; true'],
                               env={**os.environ, "CODE": code})
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    wrapper.send_signal(signal.SIGKILL)
    wrapper.wait()
    return child, record


def _gone(pid: int, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_work_dies_with_its_wrapper_and_writes_no_record(tmp_path):
    child, record = _run_and_kill_wrapper(tmp_path, arm=True)
    assert _gone(child, 2.0), "the stage process outlived its job's shell"
    time.sleep(3.5)
    assert not record.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_without_it_the_orphan_writes_its_record(tmp_path):
    # The fault as found: this is what the fix prevents (keeps the test above honest).
    child, record = _run_and_kill_wrapper(tmp_path, arm=False)
    assert not _gone(child, 0.5)
    for _ in range(100):
        if record.exists():
            break
        time.sleep(0.1)
    assert record.exists()
