"""A stage's work dies with its job.

Snakemake runs each job as ``bash -c "<launcher> scripts/<stage>.py ... > log"``. When that
shell is killed (a node failure, a Slurm step kill, a user's ``kill``), the Python child would
otherwise live on as an orphan, finish, and write ``record.parquet`` after Snakemake had marked
the job failed, so the next run would take the cell for done. On Linux the child asks the
kernel to send it SIGKILL when its parent exits (``PR_SET_PDEATHSIG``); torchrun's workers are
covered by torchrun itself, which dies with its parent the same way when it calls this too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
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
