"""One copy of a cell at a time: a lock beside its record.

A job that outlived the Snakemake that started it (killed with SIGKILL; under Slurm, a job the
scheduler still runs) would otherwise train the same cell beside the re-run that the next
Snakemake starts, both writing the same ``resume/`` and ``record.parquet``. Each job therefore
holds ``<cell dir>/.cell.lock`` (``fcntl.flock``, exclusive) from before its work writes anything
until the process ends; a second copy that cannot take it writes nothing and fails, naming the
cell and the pid, host and start time of the copy that holds it (written into the file).

The kernel drops the lock when its holder dies, however it dies, so a lock file left behind
never blocks: the file stays (it is never deleted, so that every copy locks the same file) and
only the lock on it counts. It is no declared output: Snakemake neither removes it with a failed
job's outputs nor asks for it, and the aggregation reads records named explicitly, never a
folder's other files.

Under torchrun one process holds the lock for the whole job: rank 0. The other ranks wait,
before their work, until the file names their own run (torchrun's run id and restart count),
so a second copy's ranks write nothing either: its rank 0 fails, and torchrun stops the rest.
The lock file lives on the results' file system, shared by the nodes of a multi-node job
(Linux's NFS client takes ``flock`` as a lock on the server).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .isolation import _start_ticks  # a pid's start time, to tell it from a reused pid

log = logging.getLogger("effbench")

LOCK_FILE = ".cell.lock"
EXIT_CELL_BUSY = 75  # EX_TEMPFAIL: the cell is being run; try again once its holder has ended

# The locks this process holds, by resolved path: one open file each, kept open until the
# process ends (closing any descriptor of the file would drop the lock where flock is a POSIX
# lock underneath, as on NFS; so this process never opens its own lock file a second time).
_HELD: dict[str, "CellLock"] = {}


class CellBusy(RuntimeError):
    """Another process holds the cell; ``holder`` is what it wrote into the lock file."""

    def __init__(self, cell: str, path: Path, holder: dict[str, Any] | None) -> None:
        self.cell, self.path, self.holder = cell, path, holder
        if holder and holder.get("pid") is not None:
            who = (f"pid {holder['pid']} on host {holder.get('host', '?')} (started {holder.get('started', '?')}"
                   + (f", as {holder['cell']}" if holder.get("cell") not in (None, cell) else "") + ")")
            stop = f"; wait for it to end, or stop it (on {holder.get('host', '?')}: kill {holder['pid']})"
        else:
            who = "another process (it has not written its name into the lock yet)"
            stop = "; wait for it to end, or stop it"
        super().__init__(
            f"cell {cell} is already being run by {who}: a second copy would write the same resume/ "
            f"and record, so this one writes nothing and fails{stop}, then run again ({path})")


@dataclass
class CellLock:
    """A held lock: the open file and what this process wrote into it."""

    cell: str
    path: Path
    fd: int
    holder: dict[str, Any]

    def release(self) -> None:
        """Let go before the process ends (a process that runs several cells one after another;
        a stage's job holds its cell until it exits). The file stays."""
        if _HELD.get(str(self.path.resolve())) is self:
            del _HELD[str(self.path.resolve())]
            os.close(self.fd)


def run_token() -> str | None:
    """The torchrun run this process belongs to (its rendezvous id and restart count), the same
    in every rank of one run on every node; None outside torchrun."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id:
        return None
    return f"{run_id}#{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def read_holder(path: Path) -> dict[str, Any] | None:
    """What the last holder wrote into the lock file (None: no file, empty, or half written).
    Never called by a process on its own held lock (see ``_HELD``)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _is_current(holder: dict[str, Any] | None) -> bool:
    """Whether the holder named in the file can be the process holding the lock now: on another
    host we cannot tell (yes); on this one, its pid must run, as the same process."""
    if not holder or holder.get("pid") is None:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    ticks, pinned = _start_ticks(int(holder["pid"])), holder.get("start_ticks")
    return ticks is not None and (pinned is None or ticks == pinned)


def _busy(cell: str, path: Path, settle_s: float = 1.0) -> CellBusy:
    """The refusal, naming the holder. A holder that has only just taken the lock may not have
    written its name yet (the file then still names the last, dead one): read again for a moment."""
    end = time.monotonic() + settle_s
    holder = read_holder(path)
    while not _is_current(holder) and time.monotonic() < end:
        time.sleep(0.05)
        holder = read_holder(path)
    return CellBusy(cell, path, holder if _is_current(holder) else None)


# flock refused by the file system itself (an NFS mount with ``nolock`` falls back to local
# locks instead; some FUSE file systems have none): the job runs, unguarded, and says so.
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _write_holder(fd: int, cell: str) -> dict[str, Any]:
    """Name this process in the lock file (in place: the file is never replaced)."""
    holder = {"cell": cell, "pid": os.getpid(), "host": socket.gethostname(),
              "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "start_ticks": _start_ticks(os.getpid()), "run": run_token()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    os.fsync(fd)
    return holder


def hold(cell_dir: Path, cell: str) -> CellLock | None:
    """Take the lock of the cell whose files live in ``cell_dir`` for the rest of this process's
    life, and write this process's pid, host and start time into it; raises :class:`CellBusy`
    (having written nothing) if another process holds it. Taking it again is a no-op. None where
    the file system has no locks (logged)."""
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    path = cell_dir / LOCK_FILE
    key = str(path.resolve())
    if key in _HELD:
        return _HELD[key]
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # non-inheritable across exec
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in NO_LOCKS:
                _write_holder(fd, cell)  # still names this run, for its other ranks to go on
                os.close(fd)
                log.warning("cell %s: %s cannot be locked (%s): nothing keeps a second copy of this cell "
                            "from running beside this one", cell, path, os.strerror(exc.errno))
                return None
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(cell, path) from None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:  # the file was removed or replaced after we opened it: lock the one there now
            os.close(fd)
            continue
        lock = _HELD[key] = CellLock(cell, path, fd, _write_holder(fd, cell))
        return lock
    raise RuntimeError(f"{path}: the lock file keeps being replaced; something else is removing it")


def await_rank0(cell_dir: Path, cell: str, token: str, poll_s: float = 0.1) -> dict[str, Any]:
    """A rank other than 0: wait until rank 0 of this run (``token``, :func:`run_token`) holds
    the cell. Waits as long as it takes: if rank 0 cannot take the lock it fails, and torchrun
    stops this rank with the rest."""
    path = Path(cell_dir) / LOCK_FILE
    t0, said = time.monotonic(), False
    while True:
        holder = read_holder(path)
        if holder is not None and holder.get("run") == token:
            return holder
        if not said and time.monotonic() - t0 > 10:
            log.info("waiting for rank 0 to take the lock of cell %s (%s)", cell, path)
            said = True
        time.sleep(poll_s)
