"""One copy of a cell at a time (issue #24; docs/faults.md, "Orphaned jobs").

A job that outlived the Snakemake that started it trained its cell beside the re-run, both
writing the same resume/ and record. Real processes throughout, through the entry point every
one-record stage script uses (``runner.cell_job``), and real Snakemake runs of a one-rule
workflow. Waits poll a condition (every 0.1 s, up to 30 s; Snakemake runs get minutes): the
machine is shared and loaded.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from effbench.cell_lock import EXIT_CELL_BUSY, LOCK_FILE, CellBusy, hold, read_holder
from waiting import poll, process_alive

SRC = Path(__file__).resolve().parents[2] / "src"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
CELL = "pretrain/xs/gqa"
SETTINGS = json.dumps({"size": "xs", "technique": "gqa", "device": "cpu", "measure": {"interval_s": 0.1}})

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and flock semantics of Linux")

# A stage script cut down to its entry point: cell_job (arguments, start_job, the cell's lock),
# then what pretraining writes first (its resume/ folder), then, once released, its outputs.
STAGE = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {src!r})
    from pathlib import Path
    from effbench.runner import cell_job

    def args(p):
        p.add_argument("--resume-dir", type=Path, required=True)
        p.add_argument("--release", type=Path, required=True)

    a, cell = cell_job("pretrain", None, [], args)
    a.resume_dir.mkdir(parents=True, exist_ok=True)
    (a.resume_dir / f"written-by-{{os.getpid()}}").write_text(str(os.getenv("RANK", "0")))
    while not a.release.exists():
        time.sleep(0.05)
    cell.samples_path.write_text("samples")
    cell.record_path.write_text("record")
""")




class Cell:
    """A cell folder and the stage script that runs it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.dir = tmp, tmp / "results" / "pretrain" / "xs" / "gqa"
        self.script, self.release = tmp / "stage.py", tmp / "release"
        self.script.write_text(STAGE.format(src=str(SRC)))
        self.record, self.resume = self.dir / "record.parquet", self.dir / "resume"

    def argv(self) -> list[str]:
        return [sys.executable, str(self.script), "--settings", SETTINGS, "--config-hash", "t",
                "--record", str(self.record), "--samples", str(self.dir / "samples.parquet"),
                "--resume-dir", str(self.resume), "--release", str(self.release)]

    def start(self, log: str, **env: str) -> subprocess.Popen:
        with open(self.tmp / log, "w") as out:
            return subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})

    def writers(self) -> set[int]:
        if not self.resume.exists():
            return set()
        return {int(p.name.rsplit("-", 1)[1]) for p in self.resume.glob("written-by-*")}

    def wait_written_by(self, pid: int) -> None:
        assert poll(lambda: pid in self.writers()), f"pid {pid} never started its work"


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@linux_only
def test_a_second_copy_of_a_running_cell_refuses_naming_its_holder(tmp_path):
    cell = Cell(tmp_path)
    first = cell.start("first.log")
    try:
        cell.wait_written_by(first.pid)
        second = cell.start("second.log")
        # It ends at once, refused (without the lock it started its work beside the first).
        assert poll(lambda: second.poll() is not None or len(cell.writers()) > 1, within_s=300)
        _stop(second)
        said = (tmp_path / "second.log").read_text()
        assert second.returncode == EXIT_CELL_BUSY, said
        assert f"cell {CELL} is already being run by pid {first.pid} on host {socket.gethostname()}" in said, said
        assert cell.writers() == {first.pid} and not cell.record.exists()  # the second wrote nothing
        holder = read_holder(cell.dir / LOCK_FILE)
        assert holder["pid"] == first.pid and holder["cell"] == CELL and holder["host"] == socket.gethostname()

        # The holder dies without a word (SIGKILL): the lock goes with it, its file stays, and a
        # new copy runs the cell.
        first.kill()
        first.wait()
        assert (cell.dir / LOCK_FILE).exists()
        third = cell.start("third.log")
        cell.wait_written_by(third.pid)
        cell.release.write_text("go")
        assert third.wait(timeout=300) == 0
        assert cell.record.read_text() == "record"
        assert read_holder(cell.dir / LOCK_FILE)["pid"] == third.pid
    finally:
        cell.release.write_text("go")
        _stop(first)


@linux_only
def test_torchrun_ranks_wait_for_their_rank_0_and_a_second_runs_ranks_write_nothing(tmp_path):
    # The ranks of one torchrun run share TORCHELASTIC_RUN_ID; only rank 0 takes the lock, the
    # others start their work once it holds it. A second run's rank 0 is refused; its rank 1 waits
    # (until torchrun stops it, here the test), having written nothing into resume/.
    cell = Cell(tmp_path)

    def rank(r: int, run: str) -> dict[str, str]:
        return {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2",
                "TORCHELASTIC_RUN_ID": run, "TORCHELASTIC_RESTART_COUNT": "0"}

    procs = []
    try:
        a1 = cell.start("a1.log", **rank(1, "run-a"))
        procs.append(a1)
        time.sleep(1.0)  # rank 1 is up, rank 0 not yet: it must not start its work
        assert a1.poll() is None and cell.writers() == set()
        a0 = cell.start("a0.log", **rank(0, "run-a"))
        procs.append(a0)
        cell.wait_written_by(a0.pid)
        cell.wait_written_by(a1.pid)

        b1 = cell.start("b1.log", **rank(1, "run-b"))
        procs.append(b1)
        b0 = cell.start("b0.log", **rank(0, "run-b"))
        procs.append(b0)
        assert poll(lambda: b0.poll() is not None or len(cell.writers()) > 2, within_s=300)
        assert b0.returncode == EXIT_CELL_BUSY
        assert f"already being run by pid {a0.pid}" in (tmp_path / "b0.log").read_text()
        time.sleep(0.5)
        assert b1.poll() is None and cell.writers() == {a0.pid, a1.pid}
        cell.release.write_text("go")
        assert a0.wait(timeout=300) == 0 and a1.wait(timeout=300) == 0
        assert cell.record.exists() and cell.writers() == {a0.pid, a1.pid}
    finally:
        cell.release.write_text("go")
        _stop(*procs)


PRETRAIN_PYTHON = Path(__file__).resolve().parents[2] / ".venvs" / "pretrain" / "bin" / "python"


@linux_only
@pytest.mark.skipif(not PRETRAIN_PYTHON.exists(), reason="needs the pretraining environment's torch (torchrun)")
def test_a_second_torchrun_copy_of_a_cell_fails_and_its_ranks_write_nothing(tmp_path):
    # The same through real torchrun, started as the rule starts it (python -m effbench.torchrun).
    cell = Cell(tmp_path)
    argv = [str(PRETRAIN_PYTHON), "-m", "effbench.torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=2",
            *cell.argv()[1:]]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = []
    try:
        with open(tmp_path / "first.log", "w") as out:
            first = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(first)
        assert poll(lambda: len(cell.writers()) == 2, within_s=300), "the first run's ranks never started"
        ranks = cell.writers()
        with open(tmp_path / "second.log", "w") as out:
            second = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(second)
        assert poll(lambda: second.poll() is not None or len(cell.writers()) > 2, within_s=300)
        said = (tmp_path / "second.log").read_text()
        assert second.returncode not in (None, 0) and "exitcode  : 75" in said, said[-3000:]
        assert f"cell {CELL} is already being run by pid {read_holder(cell.dir / LOCK_FILE)['pid']}" in said
        assert cell.writers() == ranks  # neither of the second run's ranks started its work
        cell.release.write_text("go")
        assert first.wait(timeout=300) == 0 and cell.record.exists()
    finally:
        cell.release.write_text("go")
        _stop(*procs)


@linux_only
def test_a_lock_file_naming_a_dead_or_unknown_holder_does_not_block(tmp_path):
    cell_dir = tmp_path / "cell"
    cell_dir.mkdir()
    (cell_dir / LOCK_FILE).write_text(json.dumps({"cell": CELL, "pid": 2**22 + 12345, "host": socket.gethostname()}))
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r}); "
            f"from effbench.cell_lock import hold; hold({str(cell_dir)!r}, 'x')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    (cell_dir / LOCK_FILE).write_text("not json")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    lock = hold(cell_dir, CELL)  # and in this process, once: taking it again is a no-op
    assert hold(cell_dir, CELL) is lock and lock.holder["pid"] == os.getpid()
    refused = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and f"already being run by pid {os.getpid()}" in refused.stderr
    assert CellBusy.__name__ in refused.stderr  # hold() itself raises; cell_job turns it into the exit
    lock.release()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# --- through Snakemake -----------------------------------------------------------------------------

SNAKEFILE = textwrap.dedent("""
    rule cell:
        output:
            record="results/pretrain/xs/gqa/record.parquet",
            samples="results/pretrain/xs/gqa/samples.parquet",
        params:
            settings={settings!r},
        log:
            "logs/pretrain/xs/gqa.log",
        shell:
            "{python} {script} --settings {{params.settings:q}} --config-hash t --record {{output.record:q}}"
            " --samples {{output.samples:q}} --resume-dir results/pretrain/xs/gqa/resume --release {release}"
            " > {{log:q}} 2>&1"
""")


def _workflow(tmp: Path) -> Cell:
    cell = Cell(tmp)
    (tmp / "Snakefile").write_text(SNAKEFILE.format(settings=SETTINGS, python=sys.executable, script=cell.script,
                                                    release=cell.release))
    return cell


def _snakemake(tmp: Path, *args: str, popen: bool = False):
    cmd = [str(SNAKEMAKE), "-s", str(tmp / "Snakefile"), "-d", str(tmp), "--cores", "1", *args]
    env = {**os.environ, "EFFBENCH_JOB_REGISTRY": str(tmp / "job-registry")}
    if popen:  # its own session, so that the test can end whatever it leaves behind
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@linux_only
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs the driver environment's snakemake")
def test_a_job_dies_with_a_killed_snakemake_and_the_rerun_runs_alone(tmp_path):
    # Issue #24 as reported: Snakemake gets SIGKILL while a job runs; after the usual --unlock the
    # re-run must not train the cell beside the old job.
    cell = _workflow(tmp_path)
    first = _snakemake(tmp_path, popen=True)
    try:
        assert poll(lambda: cell.writers(), within_s=300), "the job never started"
        (old,) = cell.writers()
        first.send_signal(signal.SIGKILL)  # Snakemake only: its job's shell and stage stay
        first.wait()
        assert poll(lambda: not process_alive(old)), "the job outlived the Snakemake that started it"
        assert _snakemake(tmp_path, "--unlock").returncode == 0
        cell.release.write_text("go")
        rerun = _snakemake(tmp_path, "--rerun-incomplete")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert cell.record.read_text() == "record" and len(cell.writers()) == 2
        assert (cell.dir / LOCK_FILE).exists()  # left beside the record; Snakemake does not mind:
        again = _snakemake(tmp_path, "-n")
        assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    finally:
        cell.release.write_text("go")
        _kill_session(first)


@linux_only
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs the driver environment's snakemake")
def test_snakemake_fails_the_job_of_a_cell_another_copy_runs(tmp_path):
    # The copy left running is one the watch cannot end (under Slurm, a batch job whose Snakemake
    # was killed on the login node): the re-run's job is refused by the lock, writes nothing, and
    # its log names the holder; Snakemake keeps the lock file; once the holder is gone it runs.
    cell = _workflow(tmp_path)
    holder = cell.start("holder.log")
    procs = []
    try:
        cell.wait_written_by(holder.pid)
        run = _snakemake(tmp_path, popen=True)
        procs.append(run)
        assert poll(lambda: run.poll() is not None or len(cell.writers()) > 1, within_s=300)
        assert run.returncode not in (None, 0)
        log = (tmp_path / "logs" / "pretrain" / "xs" / "gqa.log").read_text()
        assert f"cell {CELL} is already being run by pid {holder.pid} on host {socket.gethostname()}" in log, log
        assert cell.writers() == {holder.pid} and not cell.record.exists()
        assert read_holder(cell.dir / LOCK_FILE)["pid"] == holder.pid
        holder.kill()
        holder.wait()
        cell.release.write_text("go")
        rerun = _snakemake(tmp_path, "--rerun-incomplete")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert cell.record.read_text() == "record"
    finally:
        cell.release.write_text("go")
        _stop(holder)
        for p in procs:
            _kill_session(p)
