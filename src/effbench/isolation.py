"""Evidence that a measured job ran alone on its host.

Snakemake keeps measured jobs from sharing the machine (the ``host_share`` resource in
``workflow/rules/common.smk``) and the Slurm profile asks for whole nodes; this module is
the check that holds when something else does not play along (a second pipeline, a user's
job, a leftover process). Each measured job writes a small file into a per-host registry
while it runs and stamps its end time when it finishes; at its own end a job lists every
other registered job whose run overlapped its window. The host's load average at both
edges is recorded too, as a coarse signal of foreign load the registry cannot see.

    with JobRegistration("pretrain/xs/gqa") as job:
        ...  # the measured work
    columns = job.columns()   # concurrent_jobs, concurrent_jobs_json, host_load_*, alone

The registry lives in ``$EFFBENCH_JOB_REGISTRY`` or ``<tmp>/effbench-jobs``: ``/tmp`` is per
node on a cluster, which is the scope that matters.

Foreign CPU. The registry sees only effbench jobs: a package install, a user's build or a
second pipeline of another tool is invisible to it, and a run it slowed used to say
``alone=True``. So the monitor also takes a :class:`CpuSnapshot` at its measured window's
edges: the host's busy CPU time from ``/proc/stat`` and the CPU time of the job's own process
tree from ``/proc/<pid>/stat``. Their difference over the window is the CPU time everything
else on the host used (``foreign_cpu_s``, :meth:`effbench.measure.monitor.Window.foreign_cpu`);
above :data:`FOREIGN_CPU_MAX_CORES` of a core on average the record says ``foreign_load``
and the tables mark the cell ``[S]`` (docs/faults.md, "Measured jobs overlapping").
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text

REGISTRY_ENV = "EFFBENCH_JOB_REGISTRY"
# Entries of finished jobs are kept this long so a later job can still see overlaps; older ones are pruned.
KEEP_S = 7 * 24 * 3600


def registry_dir() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or Path(tempfile.gettempdir()) / "effbench-jobs")


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); None where
    there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after the command name, 3-based


def _alive(pid: int, start_ticks: int | None) -> bool:
    """Whether the registered process still runs: its pid exists and, where /proc tells, it is the
    same process (pids are reused: pid_max is often 32768, and a killed job leaves its entry)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return start_ticks is None or _start_ticks(pid) == start_ticks


# Foreign CPU above this many cores, averaged over the measured window, flags the run
# (``foreign_load``; ``measure.foreign_cpu_max_cores`` overrides it). An idle Linux host's own
# daemons, kernel threads and interrupts use well under 5 % of a core (this 2-core VM: ~1 %,
# docs/faults.md), and the pipeline's Snakemake waiting on its job far less than that; a
# package install or a compile uses one core or more. A quarter of a core is far above the
# first and far below the second.
FOREIGN_CPU_MAX_CORES = 0.25
# ... and only when it is at least this many CPU-seconds: the kernel counts CPU time in ticks
# (USER_HZ, 10 ms), so a window of a fraction of a second could cross the rate on a few ticks.
FOREIGN_CPU_MIN_S = 0.1
_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


@dataclass(frozen=True)
class CpuSnapshot:
    """The host's busy CPU time and one process tree's CPU time at one moment, in CPU-seconds
    since boot (the difference of two snapshots is what was used between them)."""

    t: float  # time.monotonic() when taken
    host_busy_s: float  # every CPU's busy time: user, nice, system, irq, softirq, steal
    tree_s: float  # the tree's utime + stime, with what its ended (reaped) members used
    cpus: int  # the CPUs /proc/stat counts


def host_busy(stat_text: str) -> tuple[float, int]:
    """(busy CPU-seconds since boot over all CPUs, number of CPUs) from /proc/stat's text. Busy is
    user + nice + system + irq + softirq + steal (guest time is already inside user and nice;
    idle and iowait are not busy): a hypervisor's steal is counted, as it too takes the job's
    cores."""
    lines = stat_text.splitlines()
    f = [int(x) for x in lines[0].split()[1:]]  # "cpu  user nice system idle iowait irq softirq steal ..."
    f += [0] * (8 - len(f))
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
    cpus = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    return busy * _TICK_S, max(cpus, 1)


def tree_cpu_s(root: int, proc: str = "/proc") -> float:
    """CPU-seconds process ``root`` and all its descendants have used so far: each live member's
    utime + stime, plus its cutime + cstime (what its children that ended and were waited for
    used, so a child that ends inside a window still counts as the job's). One pass over every
    process's ``stat`` (~5 ms for 100 processes on a loaded 2-core VM): at window edges only."""
    own: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{proc}/{entry.name}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()  # the fields after the command name
        except (OSError, IndexError):  # ended while we looked
            continue
        pid = int(entry.name)
        own[pid] = sum(int(x) for x in rest[11:15])  # fields 14-17: utime stime cutime cstime
        children.setdefault(int(rest[1]), []).append(pid)  # field 4: ppid
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += own.get(pid, 0)
        todo += children.get(pid, [])
    return total * _TICK_S


def cpu_snapshot(root: int, proc: str = "/proc") -> CpuSnapshot | None:
    """The host's and ``root``'s tree's CPU time now; None where there is no /proc (not Linux)."""
    try:
        busy, cpus = host_busy(Path(f"{proc}/stat").read_text())
        tree = tree_cpu_s(root, proc)
    except OSError:
        return None
    return CpuSnapshot(time.monotonic(), busy, tree, cpus)


def _load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None


@dataclass
class JobRegistration:
    """Register one measured job for the duration of a ``with`` block (see the module doc)."""

    cell: str
    registry: Path = field(default_factory=registry_dir)
    started: float = 0.0
    ended: float | None = None
    load_start: float | None = None
    load_end: float | None = None
    others: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.registry / f"{socket.gethostname()}-{os.getpid()}-{id(self):x}.json"

    def _write(self) -> None:
        entry = {"cell": self.cell, "pid": os.getpid(), "start_ticks": _start_ticks(os.getpid()),
                 "started": self.started, "ended": self.ended}
        write_text(self.path, json.dumps(entry))

    def __enter__(self) -> "JobRegistration":
        self.registry.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.load_start = _load_1m()
        self._write()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = time.time()
        self.load_end = _load_1m()
        self.others = self._overlapping()
        self._write()
        self._prune()

    def _entries(self) -> list[tuple[Path, dict[str, Any]]]:
        out = []
        for p in self.registry.glob("*.json"):
            if p == self.path:
                continue
            try:
                out.append((p, json.loads(p.read_text())))
            except (OSError, ValueError):  # a file being replaced, or foreign junk: not a job
                continue
        return out

    def _overlapping(self) -> list[dict[str, Any]]:
        """Jobs whose [started, ended] intersects ours (a job still running ends now; a job whose
        process died without stamping its end ended at its file's last change at the latest)."""
        assert self.ended is not None
        hits = []
        for p, e in self._entries():
            end = e.get("ended")
            if end is None:
                end = self.ended if _alive(int(e.get("pid", -1)), e.get("start_ticks")) else p.stat().st_mtime
            if e.get("started", float("inf")) < self.ended and end > self.started:
                hits.append({"cell": e.get("cell"), "pid": e.get("pid"), "started": e.get("started"), "ended": e.get("ended")})
        return sorted(hits, key=lambda h: (h["started"] or 0.0))

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_S
        for p, e in self._entries():
            if (e.get("ended") or 0.0) and e["ended"] < cutoff:
                p.unlink(missing_ok=True)

    def columns(self) -> dict[str, Any]:
        """The record's isolation columns (see docs/record-schema.md)."""
        return {
            "concurrent_jobs": len(self.others),
            "concurrent_jobs_json": json.dumps([o["cell"] for o in self.others]),
            "host_load_1m_start": self.load_start,
            "host_load_1m_end": self.load_end,
            "host_cpus": os.cpu_count(),
            "alone": not self.others,
        }
