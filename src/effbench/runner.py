"""Run one cell of any stage under the measurement core and write its record.

Every stage script calls ``run_cell``: it owns the monitor, provenance, the OOM-as-a-result
rule and the order of writes (samples first, the record last, each atomic), so a record
on disk always means the run finished. Any failure other than running out of memory
propagates and fails the job with its log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import provenance
from .measure.backends import NullBackend, open_backend
from .measure.monitor import Monitor
from .record import settings_json, write_record, write_samples

log = logging.getLogger("effbench")


@dataclass
class Cell:
    stage: str
    keys: dict[str, Any]  # record columns naming the cell, in path order (size, technique; model, task, method ...)
    settings: dict[str, Any]
    record_path: Path
    samples_path: Path
    config_hash: str
    libraries: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The cell's path under its stage, e.g. "xs/gqa" (the record's `cell` column)."""
        return "/".join(str(v) for v in self.keys.values())


def is_out_of_memory(exc: BaseException) -> bool:
    """Host MemoryError, torch's CUDA OOM, or an allocator message saying so (torch's CPU
    allocator raises ``RuntimeError: DefaultCPUAllocator: can't allocate memory``)."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    return (name == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text
            or "cannot allocate memory" in text)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def launch_ranks() -> tuple[int, int, int]:
    """(rank, world size, processes on this node) as torchrun sets them; (0, 1, 1) standalone."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", "1"))


def run_cell(
    cell: Cell,
    work: Callable[[Monitor], Mapping[str, Any]],
    *,
    device: str,
    interval_s: float,
    sync: Callable[[], None] | None = None,
    on_oom: Callable[[], None] | None = None,
) -> str:
    """Measure ``work(monitor)`` and write the cell's record; returns the status.

    Under torchrun every rank calls this. Rank 0 measures its node (NVML sees every GPU of
    the allocation; on a CPU the host backend measures all ranks under the launcher) and
    writes the one record; the other ranks run the work under a monitor that reads nothing
    and write nothing.
    """
    rank, _, local_world = launch_ranks()
    if rank != 0:
        with Monitor(device=device, interval_s=interval_s, backend=NullBackend()) as mon:
            work(mon)  # a failure (OOM included) fails this rank, and torchrun stops the others
        return "ok"
    started = dt.datetime.now(dt.timezone.utc)
    sjson = settings_json(cell.settings)
    run_id = f"{cell.stage}/{cell.name}/{started.strftime('%Y%m%dT%H%M%S.%fZ')}"
    values: dict[str, Any]
    backend, nvml_why_not = (
        open_backend(device, host_pid=os.getppid(), host_include_root=False)  # every rank of the node
        if local_world > 1
        else (None, None)
    )
    with Monitor(device=device, interval_s=interval_s, sync=sync, backend=backend) as mon:
        if backend is not None:
            mon.nvml_unavailable_reason = nvml_why_not
        if mon.nvml_unavailable_reason:
            log.info("measuring the host: %s", mon.nvml_unavailable_reason)
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
    }
    write_samples(cell.samples_path, run_id, samples)
    write_record(cell.record_path, row)
    log.info("wrote %s (status %s)", cell.record_path, status)
    return status


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
