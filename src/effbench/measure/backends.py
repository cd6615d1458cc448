"""The only code that touches NVML, psutil or RAPL: one reading of the hardware at a time.

A backend returns rows of (device index, key, value). Keys used by the formulas:
``mem_used_bytes``, ``mem_total_bytes``, ``util_percent``, ``power_w``. Energy comes from
monotonic counters read at window edges (``energy_j``), never from polled power when a
counter exists.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import energy_scope

Row = tuple[int, str, float]

# NVML's total-energy counter advances in steps about 12 times a second (it is refreshed with
# the board's power reading, ~every 1/12 s on Volta-Hopper); a window's energy is only as
# fine as that, so windows shorter than a few updates are flagged (monitor.MIN_ENERGY_UPDATES).
NVML_ENERGY_UPDATE_HZ = 12.0
# RAPL's package counter updates about every millisecond (Intel SDM vol. 3B, 14.9.1).
RAPL_ENERGY_UPDATE_HZ = 1000.0


class Backend(Protocol):
    name: str
    mem_source: str
    util_source: str
    energy_source: str | None  # None: this backend has no energy counter
    # optional: energy_update_hz (float | None), how often the counter updates;
    # energy_missing_reason (str | None), why there is no counter

    def read(self) -> list[Row]: ...

    def energy_j(self) -> float | None:
        """Total energy counter in J summed over the measured devices, or None."""
        ...

    def describe(self) -> dict[str, object]:
        """device_kind, device_name, device_count, driver_version and energy_scope (what the
        energy figures cover: :mod:`.energy_scope`; None without energy) for the record."""
        ...

    def close(self) -> None: ...


class BackendUnavailable(RuntimeError):
    """Raised by a backend's constructor when its hardware or library is absent."""


def _visible_gpu_selectors() -> list[str] | None:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None or env.strip() == "":
        return None if env is None else []
    return [s.strip() for s in env.split(",") if s.strip()]


@dataclass
class NvmlBackend:
    """NVIDIA GPUs through pynvml (nvidia-ml-py): memory, utilisation, power, energy counter."""

    name: str = "nvml"
    mem_source: str = "nvml_memory_used"
    util_source: str = "nvml_utilization"
    energy_source: str | None = "nvml_energy_counter"
    energy_update_hz: float | None = NVML_ENERGY_UPDATE_HZ
    energy_missing_reason: str | None = None
    _handles: list[object] = field(default_factory=list)
    _energy_ok: bool = True

    def __post_init__(self) -> None:
        try:
            import pynvml
        except ImportError as e:  # nvidia-ml-py not installed in this stage's environment
            raise BackendUnavailable(f"pynvml not importable: {e}") from e
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise BackendUnavailable(f"NVML unavailable: {e}") from e
        selectors = _visible_gpu_selectors()
        if selectors is None:
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        else:
            self._handles = [
                pynvml.nvmlDeviceGetHandleByUUID(s) if not s.isdigit() else pynvml.nvmlDeviceGetHandleByIndex(int(s))
                for s in selectors
            ]
        if not self._handles:
            pynvml.nvmlShutdown()
            raise BackendUnavailable("NVML found no visible GPU")
        try:
            for h in self._handles:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except pynvml.NVMLError:
            # Pre-Volta GPUs have no counter: fall back to integrating polled power.
            self._energy_ok = False
            self.energy_source = None
            self.energy_update_hz = None
            self.energy_missing_reason = "this GPU has no total-energy counter (pre-Volta)"

    def read(self) -> list[Row]:
        nv = self._nvml
        rows: list[Row] = []
        for i, h in enumerate(self._handles):
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            rows.append((i, "mem_used_bytes", float(mem.used)))
            rows.append((i, "mem_total_bytes", float(mem.total)))
            rows.append((i, "util_percent", float(nv.nvmlDeviceGetUtilizationRates(h).gpu)))
            try:
                rows.append((i, "power_w", nv.nvmlDeviceGetPowerUsage(h) / 1000.0))
            except nv.NVMLError:
                pass
        return rows

    def energy_j(self) -> float | None:
        if not self._energy_ok:
            return None
        return sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles) / 1000.0

    def describe(self) -> dict[str, object]:
        nv = self._nvml
        names = [nv.nvmlDeviceGetName(h) for h in self._handles]
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
        driver = nv.nvmlSystemGetDriverVersion()
        return {
            "device_kind": "cuda",
            "device_name": names[0],
            "device_count": len(self._handles),
            "driver_version": driver.decode() if isinstance(driver, bytes) else driver,
            "energy_scope": self._scope(self._handles[0], names[0]),
        }

    def _scope(self, handle: object, name: str) -> str:
        """What the energy figures cover (the counter's; without one, the polled board power's)."""
        nv = self._nvml
        arch = c2c = None
        try:
            arch = int(nv.nvmlDeviceGetArchitecture(handle))
        except Exception:  # noqa: BLE001 - an old driver or pynvml: the name alone decides
            pass
        if arch in energy_scope.GRACE_PARTNER_ARCHS:
            try:
                c2c = bool(nv.nvmlDeviceGetC2cModeInfoV(handle).isC2cEnabled)
            except Exception:  # noqa: BLE001 - not supported off a superchip, or by this pynvml
                pass
        return energy_scope.nvidia_scope(name, arch, energy_scope.host_machine(),
                                         grace_cpu=energy_scope.host_has_grace(), c2c_enabled=c2c)

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class HostBackend:
    """The process tree on the CPU: memory and CPU utilisation via psutil.

    Children are included because some engines (vLLM) run the model in a subprocess. Memory is
    the tree's PSS (each shared page divided among the processes that map it), so pages shared
    by the tree's processes count once, not once per process as summed RSS would; where PSS is
    unreadable it falls back to USS, then RSS, and ``mem_source`` names what was summed.
    CPU utilisation is normalised by the cores this process may use, so 1.0 = all of them.

    Reading PSS is not free: the kernel walks the process's page tables (``smaps_rollup``),
    ~45 ms for a vLLM process on 2 cores, holding its memory-map lock. Read at 10 Hz that took
    ~45 % of a core from the measured process and made vLLM's offline batches 1.6× slower
    (``benchmarks/serving_vs_vllm_bench.py``). So a process's PSS is read at most once per
    ``cost / PSS_DUTY`` seconds (its last read's cost); in between, its memory is that PSS plus
    the change of its RSS since (new pages are private: they count fully in both), and
    ``mem_source`` says so (``+rss_delta``).
    """

    #: Share of one core that PSS reads may take.
    PSS_DUTY = 0.02

    name = "host"
    util_source = "psutil_cpu_percent"
    energy_source: str | None = None
    energy_update_hz: float | None = None

    def __init__(self, pid: int | None = None, include_root: bool = True) -> None:
        """pid: root of the measured tree (default: this process). include_root=False measures
        the root's descendants only, e.g. the ranks under a torchrun launcher."""
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process(pid or os.getpid())
        self._include_root = include_root
        self._ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self._total = float(psutil.virtual_memory().total)
        self._cpu_seen: dict[int, psutil.Process] = {}
        self._tree()  # prime cpu_percent so the first reading is meaningful
        self._mem_kind = _memory_kind(self._proc)
        self._fell_back = False  # a process of the tree refused PSS/USS: its RSS was summed
        self._exact: dict[int, tuple[float, float, float, float]] = {}  # pid: (at, cost, pss, rss)
        self._estimated = False  # a reading was last PSS + RSS change (see the class doc)
        try:
            self._rapl: RaplEnergy | None = RaplEnergy()
            self.energy_source = RaplEnergy.source
            self.energy_update_hz = RAPL_ENERGY_UPDATE_HZ
            self.energy_missing_reason: str | None = None
        except BackendUnavailable as e:
            self._rapl = None
            self.energy_missing_reason = f"no energy counter on this host (no NVML GPU; {e})"

    # Finding children means reading every process's /proc entry (~10 ms on a busy host),
    # so the tree is refreshed every few seconds only: a new child is missed for < 5 s.
    CHILD_SCAN_S = 5.0

    def _tree(self) -> list[object]:
        now = time.monotonic()
        if now - getattr(self, "_scanned_at", -1e9) >= self.CHILD_SCAN_S:
            self._scanned_at = now
            procs = [self._proc] if self._include_root else []
            try:
                procs += self._proc.children(recursive=True)
            except self._psutil.Error:
                pass
            # cpu_percent needs the same Process object across calls to measure an interval.
            self._members = [self._cpu_seen.setdefault(p.pid, p) for p in procs]
        return self._members

    @property
    def mem_source(self) -> str:
        return (f"psutil_{self._mem_kind}" + ("+rss_delta" if self._estimated else "")
                + ("+rss_fallback" if self._fell_back else ""))

    def _memory(self, p: object) -> float:
        rss = float(p.memory_info().rss)  # type: ignore[attr-defined]
        if self._mem_kind == "rss":
            return rss
        now = time.monotonic()
        last = self._exact.get(p.pid)  # type: ignore[attr-defined]
        if last is not None and now - last[0] < last[1] / self.PSS_DUTY:
            self._estimated = True
            return max(0.0, last[2] + rss - last[3])
        try:
            t0 = time.monotonic()
            exact = float(getattr(p.memory_full_info(), self._mem_kind))  # type: ignore[attr-defined]
        except self._psutil.AccessDenied:
            self._fell_back = True
            return rss
        self._exact[p.pid] = (now, time.monotonic() - t0, exact, rss)  # type: ignore[attr-defined]
        return exact

    def read(self) -> list[Row]:
        mem = 0.0
        cpu = 0.0
        for p in self._tree():
            try:
                with p.oneshot():  # type: ignore[attr-defined]
                    mem += self._memory(p)
                    cpu += p.cpu_percent(None)  # type: ignore[attr-defined]
            except self._psutil.Error:
                continue
        return [
            (0, "mem_used_bytes", mem),
            (0, "mem_total_bytes", self._total),
            (0, "util_percent", min(cpu / self._ncpu, 100.0)),
        ]

    def energy_j(self) -> float | None:
        return self._rapl.energy_j() if self._rapl else None

    def describe(self) -> dict[str, object]:
        return {
            "device_kind": "cpu",
            "device_name": _cpu_model(),
            "device_count": 1,
            "driver_version": None,
            "energy_scope": energy_scope.CPU_PACKAGE if self._rapl is not None else None,
        }

    def close(self) -> None:
        pass


def _memory_kind(proc: object) -> str:
    """"pss" where the kernel reports it (Linux smaps), else "uss", else "rss"."""
    import psutil

    try:
        full = proc.memory_full_info()  # type: ignore[attr-defined]
    except (psutil.AccessDenied, AttributeError):
        return "rss"
    return "pss" if hasattr(full, "pss") else ("uss" if hasattr(full, "uss") else "rss")


def _cpu_model() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class RaplEnergy:
    """Intel/AMD RAPL package energy from the powercap sysfs interface (whole sockets)."""

    source = "rapl_package_counter"

    def __init__(self, root: str = "/sys/class/powercap") -> None:
        zones = sorted(glob.glob(f"{root}/intel-rapl:[0-9]*"))
        zones = [z for z in zones if z.count(":") == 1]  # packages, not sub-zones
        readable = [z for z in zones if os.access(f"{z}/energy_uj", os.R_OK)]
        if not readable:
            raise BackendUnavailable(f"no readable RAPL package counters under {root}")
        self._zones = readable
        self._max = [float(Path(f"{z}/max_energy_range_uj").read_text()) for z in readable]
        self._last = [self._raw(i) for i in range(len(readable))]
        self._total = 0.0

    def _raw(self, i: int) -> float:
        return float(Path(f"{self._zones[i]}/energy_uj").read_text())

    def energy_j(self) -> float:
        for i in range(len(self._zones)):
            now = self._raw(i)
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped around
                delta += self._max[i]
            self._total += delta
            self._last[i] = now
        return self._total / 1e6


class NullBackend:
    """Reads nothing: the monitor of a non-zero rank, whose node rank 0 already measures."""

    name = "none"
    mem_source = "none"
    util_source = "none"
    energy_source: str | None = None
    energy_update_hz: float | None = None
    energy_missing_reason = "measured by rank 0"

    def read(self) -> list[Row]:
        return []

    def energy_j(self) -> float | None:
        return None

    def describe(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        pass


def open_backend(device: str, host_pid: int | None = None, host_include_root: bool = True) -> tuple[Backend, str | None]:
    """The backend for ``device`` ("cuda", "cpu" or "auto") and why NVML was not used, if not.

    host_pid / host_include_root: the process tree the host backend measures (see HostBackend).
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"unknown device {device!r}: expected auto, cuda or cpu")
    why_not = None
    if device in ("auto", "cuda"):
        try:
            return NvmlBackend(), None
        except BackendUnavailable as e:
            if device == "cuda":
                raise
            why_not = str(e)
    return HostBackend(host_pid, host_include_root), why_not
