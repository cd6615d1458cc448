"""Device helpers shared by the torch stages (pretraining, fine-tuning): which device a
cell runs on, how to synchronise it at measurement edges, how to free memory after an OOM,
and an optional cap on host memory so that exhaustion is a ``MemoryError`` (an ``oom``
record) rather than the kernel's OOM killer.

Imports torch lazily, so the light parts of the package never pull it in.
"""

from __future__ import annotations

import logging
import resource
from typing import Any, Callable

log = logging.getLogger("effbench")


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config key `device` is cuda but torch sees no CUDA device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def cuda_sync_or_none(settings: dict[str, Any]) -> Callable[[], None] | None:
    import torch

    return torch.cuda.synchronize if pick_device(settings["device"]) == "cuda" else None


def free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def apply_host_memory_cap(limit_gb: float | None) -> int | None:
    """Cap this process's data memory (RLIMIT_DATA) at ``limit_gb`` GB; None leaves it as is.

    RLIMIT_DATA bounds the private writable mappings (heap, anonymous mmap: tensors,
    optimizer state), not the libraries' code, so the number means what a user expects of a
    memory cap. Beyond it, allocations fail inside the process (Python ``MemoryError``,
    torch's ``DefaultCPUAllocator: can't allocate memory``), which ``run_cell`` records as
    ``oom``. Returns the limit in bytes (None when unset).
    """
    if limit_gb is None:
        return None
    limit = int(limit_gb * 1e9)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    log.info("host data memory capped at %.2f GB (RLIMIT_DATA)", limit / 1e9)
    return limit
