"""A stage's work dies with its job, and with the Snakemake that started the job.

Snakemake runs each job as ``bash -c "<launcher> scripts/<stage>.py ... > log"``. When that
shell is killed (a node failure, a Slurm step kill, a user's ``kill``), the Python child would
otherwise live on as an orphan, finish, and write ``record.parquet`` after Snakemake had marked
the job failed, so the next run would take the cell for done. On Linux the child asks the
kernel to send it SIGKILL when its parent exits (``PR_SET_PDEATHSIG``); torchrun's workers are
covered by torchrun itself, which dies with its parent the same way when it calls this too.

When Snakemake itself is killed (SIGKILL, so it cannot clean up), the job's shell does not die:
it is re-parented to init and waits on; the stage lives on beside the re-run that the next
Snakemake starts after ``--unlock``, both writing the same ``resume/`` and record. So the
process whose parent is the job's shell also watches the Snakemake that started that shell (the
shell's parent, pinned by its start time in ``/proc``) and dies with it
(:func:`watch_snakemake`). Only a Snakemake is watched: under Slurm the job's shell is started
by the Snakemake that the batch step runs for the one job (it waits for the job), or by
``slurmstepd``, which is not watched; a shell started by anything else (a user's terminal, a
test) is left alone. The per-cell lock (``effbench.cell_lock``) refuses a second copy where this
does not apply.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import sys
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# What a job's shell is: Snakemake runs shell rules with bash (``set -euo pipefail; ...``);
# ``sh``-likes are accepted for a site that sets another shell.
SHELLS = frozenset({"bash", "sh", "dash", "zsh", "ksh"})
WATCH_POLL_S = 1.0  # only where pidfd_open is missing (Linux < 5.3): one /proc read a second


def arm_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    """Ask to receive ``sig`` when the parent process exits; True when armed.

    Checks the parent afterwards: if it died before the call, this process is already an
    orphan (re-parented to init or a subreaper) and exits at once rather than run unowned.
    """
    if not sys.platform.startswith("linux"):
        return False  # macOS laptops: no equivalent; Snakemake's own clean-up applies
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent or parent == 1:
        os.kill(os.getpid(), sig)
    return True


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Die with the job: with the parent process (:func:`arm_pdeathsig`) and, where the parent
    is the job's shell, with the Snakemake that started it (:func:`watch_snakemake`). True when
    the first is armed. Every stage script calls it first thing (``runner.start_job``), and so
    does ``python -m effbench.torchrun``, whose workers die with it."""
    armed = arm_pdeathsig(sig)
    if armed:
        watch_snakemake(sig)
    return armed


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(command name, parent pid, start time in clock ticks since boot) from /proc/<pid>/stat;
    None where the process is gone or has exited (a zombie not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on
    if rest[0] in ("Z", "X"):
        return None
    return comm, int(rest[1]), int(rest[19])


def is_snakemake(pid: int) -> bool:
    """Whether the process runs Snakemake: ``snakemake ...`` (its entry-point script, as
    ``python .../bin/snakemake ...`` once the kernel has read the shebang) or ``python -m
    snakemake ...``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    names = [os.path.basename(a.decode(errors="replace")) for a in argv[:2]]
    return "snakemake" in names or argv[1:3] == [b"-m", b"snakemake"]


def _snakemake_of_shell() -> tuple[int, int] | None:
    """(pid, start ticks) of the Snakemake that started this process's shell, if this process's
    parent is a shell and that shell's parent is a Snakemake; None otherwise."""
    shell = os.getppid()
    st = _stat(shell)
    if st is None or st[0] not in SHELLS or st[1] <= 1:
        return None  # not a shell's child, or the shell is an orphan already: nothing to pin
    starter = st[1]
    starter_st = _stat(starter)
    if starter_st is None or not is_snakemake(starter):
        return None
    return starter, starter_st[2]


def _gone_now(sig: int, pid: int) -> None:
    try:
        sys.stderr.write(f"effbench: the Snakemake that started this job (pid {pid}) is gone: stopping "
                         "(a job must not outlive its Snakemake; docs/faults.md, Orphaned jobs)\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), sig)


def watch_snakemake(sig: int = signal.SIGKILL) -> int | None:
    """Die (``sig``) when the Snakemake that started this process's shell is gone; returns its
    pid, or None where there is none to watch (see the module doc for which starter counts).

    A daemon thread waits on a pidfd of that Snakemake (no CPU while it waits; one /proc read a
    second on kernels without pidfd_open). The pid is pinned by its start time: a pid reused
    after Snakemake's death is not taken for it."""
    if not sys.platform.startswith("linux"):
        return None
    found = _snakemake_of_shell()
    if found is None:
        return None
    pid, ticks = found
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Python < 3.9 or Linux < 5.3; or already gone (checked below)
        pidfd = None
    # Still the same process, and still our shell's parent? If not, it died before we looked.
    still = _stat(pid)
    shell = _stat(os.getppid())
    if still is None or still[2] != ticks or shell is None or shell[1] != pid:
        _gone_now(sig, pid)
        return pid

    def wait() -> None:
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not poller.poll():  # readable when the process has exited
                pass
        else:
            stop = threading.Event()
            while not stop.wait(WATCH_POLL_S):
                st = _stat(pid)
                if st is None or st[2] != ticks:
                    break
        _gone_now(sig, pid)

    threading.Thread(target=wait, name="effbench-watch-snakemake", daemon=True).start()
    return pid


def exit_without_teardown(code: int = 0) -> None:
    """End a stage's process now, once its outputs are written: flush the logs and stdio, then
    ``os._exit``. The interpreter's own teardown (freeing torch, transformers, vLLM or
    LlamaFactory module by module) takes 2-3 s on 2 cores, for each of the ~40 jobs of the
    embedded default. Call it only after every output file is closed: the stages write theirs
    by atomic rename (``effbench.atomic``) before returning. An exception never gets here: a
    failing script ends the normal way, with its traceback."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to flush
            pass
    os._exit(code)
