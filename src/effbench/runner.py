"""Run one cell of any stage under the measurement core and write its record.

Every stage script calls ``run_cell``: it owns the monitor, provenance, the OOM-as-a-result
rule and the order of writes (samples first, the record last, each atomic), so a record
on disk always means the run finished. Any failure other than running out of memory
propagates and fails the job with its log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cell_lock, provenance
from .isolation import FOREIGN_CPU_MAX_CORES, JobRegistration
from .lifetime import die_with_parent
from .measure.backends import Backend, NullBackend, open_backend
from .measure.monitor import Monitor
from .record import settings_json, write_record, write_samples

log = logging.getLogger("effbench")


# The record columns that name a cell of each stage, in path order; their values are the
# settings' own entries of the same name.
KEY_NAMES: dict[str, tuple[str, ...]] = {
    "pretrain": ("size", "technique"),
    "finetune": ("model", "task", "method"),
    "quantize": ("model", "precision"),
    "inference": ("model", "precision", "load_point"),
}


@dataclass
class Cell:
    stage: str
    keys: dict[str, Any]  # record columns naming the cell, in path order (KEY_NAMES)
    settings: dict[str, Any]
    record_path: Path
    samples_path: Path
    config_hash: str
    libraries: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(
        cls, stage: str, settings: dict[str, Any], *, record_path: Path, samples_path: Path, config_hash: str,
        libraries: list[str],
    ) -> "Cell":
        """The cell whose keys are the settings' entries named by ``KEY_NAMES[stage]``."""
        keys = {k: settings[k] for k in KEY_NAMES[stage]}
        return cls(stage, keys, settings, record_path, samples_path, config_hash, libraries)

    @property
    def name(self) -> str:
        """The cell's path under its stage, e.g. "xs/gqa" (the record's `cell` column)."""
        return "/".join(str(v) for v in self.keys.values())


# Messages that say a job asked for more memory than its device has: torch's CPU allocator
# ("DefaultCPUAllocator: can't allocate memory"), CUDA, and vLLM's start-up checks of its KV
# cache against the memory left after the weights (GPU and CPU backends).
OUT_OF_MEMORY_PHRASES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "no available memory for the cache blocks",
    "which is larger than the available kv cache memory",
    "is less than requested memory for kv",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Host MemoryError, torch's CUDA OOM, or a message saying so (:data:`OUT_OF_MEMORY_PHRASES`;
    a vLLM engine that failed to start carries its engine core's root cause in its message)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or any(p in text for p in OUT_OF_MEMORY_PHRASES)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def start_job() -> None:
    """What every stage script does first: log to its job's log, and die with its job's shell
    and with the Snakemake that started it (an orphan that outlived a failed job would write a
    record that counts as done, or run beside the re-run of its cell)."""
    setup_logging()
    die_with_parent()


def claim_cell(cell_dir: Path, name: str) -> None:
    """Make this job the only copy of its cell before it writes anything (``effbench.cell_lock``):
    rank 0 (or the only process) takes ``<cell_dir>/.cell.lock``; the other ranks of a torchrun
    job wait until their rank 0 holds it. A cell another copy is running (a job that outlived
    the Snakemake that started it) ends this process with :data:`cell_lock.EXIT_CELL_BUSY`,
    naming that copy, and nothing written."""
    rank, world, _, _ = launch_ranks()
    if rank != 0 and world > 1:
        token = cell_lock.run_token()
        if token is None:  # ranks not started by torchrun: nothing names their run
            log.warning("rank %d: no torchrun run id, so not waiting for rank 0 to lock cell %s", rank, name)
        else:
            cell_lock.await_rank0(cell_dir, name, token)
        return
    try:
        lock = cell_lock.hold(cell_dir, name)
    except cell_lock.CellBusy as busy:
        log.error("%s", busy)
        raise SystemExit(cell_lock.EXIT_CELL_BUSY) from None
    if lock is not None:
        log.info("cell %s: this job (pid %d) is its only copy (%s)", name, os.getpid(), lock.path)


def cell_job(stage: str, doc: str | None, libraries: list[str],
             add_args: Callable[[argparse.ArgumentParser], None]) -> tuple[argparse.Namespace, Cell]:
    """The command line every one-record stage script shares: ``--settings`` (the cell's resolved
    settings, JSON), ``--config-hash``, ``--record``, ``--samples``, plus the stage's own
    arguments (``add_args``); starts the job (:func:`start_job`), makes it the only copy of its
    cell (:func:`claim_cell`: the lock beside the record, taken before the work writes anything,
    ``resume/`` included) and returns its cell."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--settings", required=True, help="the cell's resolved settings (JSON)")
    p.add_argument("--config-hash", required=True)
    p.add_argument("--record", type=Path, required=True)
    p.add_argument("--samples", type=Path, required=True)
    add_args(p)
    a = p.parse_args()
    start_job()
    cell = Cell.from_settings(stage, json.loads(a.settings), record_path=a.record, samples_path=a.samples,
                              config_hash=a.config_hash, libraries=libraries)
    claim_cell(cell.record_path.parent, f"{stage}/{cell.name}")
    return a, cell


def launch_ranks() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, processes on this node) as torchrun sets them; (0, 1, 0, 1)
    standalone."""
    env = os.environ
    return (int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")),
            int(env.get("LOCAL_WORLD_SIZE", "1")))


def _node_backend(device: str, local_rank: int, local_world: int) -> tuple[Backend, str | None]:
    """Local rank 0 measures its node, every rank of it (NVML sees every GPU of the allocation;
    on a CPU the host backend measures the launcher's children); the other ranks read nothing."""
    if local_rank != 0:
        return NullBackend(), None
    if local_world > 1:
        return open_backend(device, host_pid=os.getppid(), host_include_root=False)
    return open_backend(device)


def run_cell(
    cell: Cell,
    work: Callable[[Monitor], Mapping[str, Any]],
    *,
    sync: Callable[[], None] | None = None,
    on_oom: Callable[[], None] | None = None,
) -> str:
    """Measure ``work(monitor)`` and write the cell's record; returns the status.

    The device and the sampling period are the settings' ``device`` and ``measure.interval_s``.
    Under torchrun every rank calls this. Local rank 0 of each node measures that node, and
    the work combines the nodes' figures (pretrain: ``parallel.sum_over_nodes``); rank 0
    writes the one record, the other ranks write nothing.
    """
    device, interval_s = cell.settings["device"], cell.settings["measure"]["interval_s"]
    rank, _, local_rank, local_world = launch_ranks()
    backend, nvml_why_not = _node_backend(device, local_rank, local_world)
    if rank != 0:
        node_sync = sync if local_rank == 0 else None  # only a measuring rank reads counters at edges
        with Monitor(device=device, interval_s=interval_s, sync=node_sync, backend=backend) as mon:
            try:
                work(mon)
            except BaseException as exc:  # noqa: BLE001 - only OOM is swallowed
                if not is_out_of_memory(exc):
                    raise  # fails this rank, and torchrun stops the others
                # Ranks run the same shapes, so they run out of memory at the same allocation:
                # this rank ends cleanly and rank 0 records the cell as `oom`. (Had rank 0 not
                # run out, its next collective fails on the missing peer: a failed job.)
                log.error("rank %d ran out of memory: %s", rank, str(exc)[:500])
                return "oom"
        return "ok"
    started = dt.datetime.now(dt.timezone.utc)
    sjson = settings_json(cell.settings)
    run_id = f"{cell.stage}/{cell.name}/{started.strftime('%Y%m%dT%H%M%S.%fZ')}"
    values: dict[str, Any]
    # The job's process tree, whose CPU time is not foreign load: under torchrun the launcher's.
    tree_pid = os.getppid() if local_world > 1 else os.getpid()
    with JobRegistration(f"{cell.stage}/{cell.name}") as job, \
            Monitor(device=device, interval_s=interval_s, sync=sync, backend=backend, tree_pid=tree_pid) as mon:
        mon.nvml_unavailable_reason = nvml_why_not
        if nvml_why_not:
            log.info("measuring the host: %s", nvml_why_not)
        t0 = time.monotonic()
        try:
            values = dict(work(mon))
            status, detail = "ok", None
        except BaseException as exc:  # noqa: BLE001 - only OOM is swallowed, see below
            if not is_out_of_memory(exc):
                raise
            if on_oom is not None:
                on_oom()  # e.g. free the CUDA cache so the record can still be written
            status = "oom"
            detail = f"{type(exc).__name__}: {str(exc)[:2000]} | settings tried: {sjson}"
            log.error("cell %s ran out of memory: %s", cell.name, detail)
            values = {"seconds": time.monotonic() - t0}
        device_info = mon.describe()
        samples = mon.samples_rows()
        foreign = mon.foreign_cpu(cell.settings["measure"].get("foreign_cpu_max_cores", FOREIGN_CPU_MAX_CORES))
    ended = dt.datetime.now(dt.timezone.utc)
    row: dict[str, Any] = {
        "stage": cell.stage,
        "cell": cell.name,
        "run_id": run_id,
        "status": status,
        "status_detail": detail,
        **cell.keys,
        **values,
        "settings_json": sjson,
        "settings_hash": _sha256(sjson),
        "config_hash": cell.config_hash,
        "code_version": provenance.code_version(),
        "library_versions_json": json.dumps(provenance.library_versions(cell.libraries), sort_keys=True),
        "host": provenance.host(),
        **device_info,
        "seed": cell.settings.get("seed"),
        "started_at": started,
        "ended_at": ended,
        **provenance.slurm(),
        **job.columns(),
        **foreign,
    }
    if not job.columns()["alone"]:
        log.warning("cell %s shared the host with %s while it was measured", cell.name, job.columns()["concurrent_jobs_json"])
    if foreign["foreign_load"]:
        log.warning("cell %s shared the host with other processes while it was measured: they used %.1f CPU-s "
                    "(%s)", cell.name, foreign["foreign_cpu_s"].value, "docs/faults.md, Measured jobs overlapping")
    write_samples(cell.samples_path, run_id, samples)
    write_record(cell.record_path, row)
    log.info("wrote %s (status %s)", cell.record_path, status)
    return status


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
