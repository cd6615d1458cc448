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
