"""What an energy counter covers: the record's ``energy_scope`` (pure; the backends call it).

Two joules are only comparable when they were counted over the same hardware. NVML's
total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``) covers the GPU board on an
H100/H200/A100, but on a Grace superchip (GH200, GB200) it covers the whole module: the GPU,
the Grace CPU and their memory (the Zeus maintainers, Zeus PR #172; ../shared/reference/
toolchain.md). A RAPL package counter covers the CPU sockets only (not DRAM, not the GPU).

* ``gpu``: an NVIDIA GPU board's counter (any NVIDIA GPU not on a Grace superchip).
* ``module``: a Grace superchip's module counter (GPU + Grace CPU + memory). Detected from
  the device's name ("GH200", "GB200") or, where a driver names it otherwise, from a
  Hopper/Blackwell GPU on an aarch64 host whose CPU is a Grace (or whose GPU reports its
  NVLink-C2C link to a CPU enabled).
* ``cpu_package``: RAPL package counters (the host backend on a CPU).
* ``node``: a whole node's meter (no backend reads one yet; the enum keeps room for it).
* ``None``: no counter measured energy.

:data:`SCOPE_NOTES` gives a sentence per scope for tables and the report, and
:func:`mixed_scope_flag` the warning a table shows when it compares figures of different scopes.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from pathlib import Path

# The record's enum (record_columns.ENERGY_SCOPES; not imported: the backends need no pyarrow).
GPU, MODULE, CPU_PACKAGE, NODE = "gpu", "module", "cpu_package", "node"
SCOPES = (GPU, MODULE, CPU_PACKAGE, NODE)

# NVML's nvmlDeviceArchitecture_t values (pynvml NVML_DEVICE_ARCH_*), so this module needs no pynvml.
NVML_ARCH_HOPPER = 9
NVML_ARCH_BLACKWELL = 10
# The GPU generations NVIDIA pairs with Grace in a superchip (GH200, GB200).
GRACE_PARTNER_ARCHS = frozenset({NVML_ARCH_HOPPER, NVML_ARCH_BLACKWELL})
# Names NVML gives Grace superchips' GPUs, e.g. "NVIDIA GH200 480GB", "GH200 144G HBM3e", "NVIDIA GB200".
SUPERCHIP_NAMES = ("GH200", "GB200", "GB300")

# Grace: Arm Neoverse V2 cores (CPU implementer 0x41, part 0xd4f); its SoC id is NVIDIA's
# JEP106 code (036b) and Grace's part (0241).
_GRACE_SOC_ID = "jep106:036b:0241"
_NEOVERSE_V2 = ("0x41", "0xd4f")

SCOPE_NOTES: dict[str, str] = {
    GPU: "gpu: the GPU board's NVML energy counter (the GPU and its HBM; not the host CPU or DRAM)",
    MODULE: "module: a Grace superchip's (GH200/GB200) module counter (GPU + Grace CPU + memory)",
    CPU_PACKAGE: "cpu_package: RAPL package counters (the CPU sockets; not DRAM, not a GPU)",
    NODE: "node: the whole node's meter (CPUs, GPUs, memory, fans, power supplies)",
}


def nvidia_scope(device_name: str, arch: int | None = None, host_machine: str | None = None,
                 grace_cpu: bool = False, c2c_enabled: bool | None = None) -> str:
    """``module`` for a Grace superchip's GPU, else ``gpu``.

    device_name: NVML's name of the device. arch: NVML's architecture (``nvmlDeviceGetArchitecture``;
    None when unread). host_machine: ``platform.machine()`` of the host. grace_cpu: whether the
    host's CPU is a Grace (:func:`host_has_grace`). c2c_enabled: NVML's NVLink-C2C mode
    (``nvmlDeviceGetC2cModeInfoV``; only a superchip's GPU has a C2C link to a CPU; None: unread).
    """
    name = device_name.upper()
    if any(s in name for s in SUPERCHIP_NAMES):
        return MODULE
    if arch in GRACE_PARTNER_ARCHS and (host_machine or "").lower() in ("aarch64", "arm64") \
            and (grace_cpu or c2c_enabled):
        return MODULE
    return GPU


def host_has_grace(cpuinfo: str | None = None, soc_id: str | None = None) -> bool:
    """Whether the host's CPU is an NVIDIA Grace: its SoC id, else Neoverse V2 cores in /proc/cpuinfo.

    The arguments are the two files' text (read from this host when None)."""
    if soc_id is None:
        soc_id = _read("/sys/devices/soc0/soc_id")
    if soc_id.strip().lower().startswith(_GRACE_SOC_ID):
        return True
    if cpuinfo is None:
        cpuinfo = _read("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip().lower())
    return (fields.get("cpu implementer"), fields.get("cpu part")) == _NEOVERSE_V2


def host_machine() -> str:
    return platform.machine()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def scope_note(scope: str | None) -> str:
    """The sentence for a scope; for None, that no counter measured energy."""
    return SCOPE_NOTES[scope] if scope is not None else "none: no energy counter measured energy"


def mixed_scope_flag(scopes: Iterable[str | None]) -> str | None:
    """A warning when energy figures of different scopes would be compared side by side, else None.

    Figures without a scope (None, or a table's NaN: no counter) carry no energy and do not count."""
    present = sorted({s for s in scopes if isinstance(s, str)})
    if len(present) < 2:
        return None
    notes = "; ".join(SCOPE_NOTES.get(s, s) for s in present)
    return (f"energy figures of different scopes are compared ({', '.join(present)}): they count different "
            f"hardware and are not comparable joule for joule ({notes})")
