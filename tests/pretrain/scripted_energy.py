"""Run a stage script with a host backend whose energy counter is scripted.

This CPU host has no energy counter, so the one boundary faked is the counter itself: every
read adds ``EFFBENCH_TEST_JOULES`` J, so a window (read at its two edges) measures exactly
that much. Memory and utilisation stay the real psutil readings.

    python scripted_energy.py scripts/pretrain.py --settings ...
"""

from __future__ import annotations

import os
import runpy
import sys

from effbench import runner
from effbench.measure import backends, monitor


class ScriptedEnergyHost(backends.HostBackend):
    def __init__(self, pid: int | None = None, include_root: bool = True) -> None:
        super().__init__(pid, include_root)
        self.energy_source = "scripted_counter"
        self.energy_missing_reason = None
        self._per_read = float(os.environ["EFFBENCH_TEST_JOULES"])
        self._reads = 0

    def energy_j(self) -> float:
        self._reads += 1
        return self._reads * self._per_read


def _open(device: str, host_pid: int | None = None, host_include_root: bool = True):  # type: ignore[no-untyped-def]
    return ScriptedEnergyHost(host_pid, host_include_root), None


runner.open_backend = _open  # type: ignore[assignment]
monitor.open_backend = _open  # type: ignore[assignment]  # where a monitor opens its own backend
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
