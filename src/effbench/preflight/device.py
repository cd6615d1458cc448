"""What `device: auto` means on the machine preflight runs on, as the stages will decide it: a GPU
when NVML finds one (the measurement backends, ``effbench.measure.backends``; the torch stages ask
``torch.cuda.is_available()``), else the CPU.

The embedded default (`config/config.yaml`) says `device: auto`. On a machine without a GPU its
jobs run on the CPU, so the GPU memory and run-time checks do not apply (as for `device: cpu`);
on a machine with one, the GPU checked against is that GPU (its NVML memory size) unless
``cluster.gpu_memory_gb`` names another. `device: cuda` (a cluster campaign, `config/paper.yaml`)
is never probed: the login node preflight runs on has no GPU of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LocalGpu:
    name: str
    memory_gb: float  # total memory of device 0, GB (10^9 bytes)
    count: int


def local_gpu() -> LocalGpu | str:
    """The GPUs NVML sees here, or why none (the reason)."""
    try:
        import pynvml
    except ImportError as e:
        return f"NVML is not importable ({e})"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return f"NVML found no GPU ({type(e).__name__}: {e})".strip()
    try:
        n = pynvml.nvmlDeviceGetCount()
        if n < 1:
            return "NVML found no GPU (0 devices)"
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else str(name)
        return LocalGpu(name, pynvml.nvmlDeviceGetMemoryInfo(h).total / 1e9, n)
    except Exception as e:  # noqa: BLE001
        return f"NVML failed ({type(e).__name__}: {e})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


@dataclass(frozen=True)
class Device:
    """The device the memory and run-time checks judge: ``kind`` cpu or cuda; ``config`` the config
    they read (with ``cluster.gpu_memory_gb`` filled from the local GPU where `auto` found one and
    the config gives none); ``note`` what `auto` resolved to and why (None when not `auto`)."""

    kind: str
    config: dict[str, Any]
    note: str | None = None


def resolve(config: dict[str, Any]) -> Device:
    asked = config.get("device", "auto")
    if asked != "auto":
        return Device(asked, config)
    gpu = local_gpu()
    if isinstance(gpu, str):
        return Device("cpu", config, f"device auto is the CPU here: {gpu}")
    cluster = dict(config.get("cluster") or {})
    note = f"device auto is the GPU here: {gpu.count} × {gpu.name}, {gpu.memory_gb:.1f} GB (NVML)"
    if cluster.get("gpu_memory_gb") is None:
        cluster["gpu_memory_gb"] = round(gpu.memory_gb, 1)
        note += "; checked against it (cluster.gpu_memory_gb unset)"
        config = {**config, "cluster": cluster}
    return Device("cuda", config, note)
