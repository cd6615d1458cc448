"""Several devices under one monitor, and several ranks on one node.

Every other monitor test reads one device. Here NVML itself is scripted (the true boundary:
``pynvml``'s functions answer from a script of two GPUs on a scripted clock), so the real
:class:`NvmlBackend`, :class:`Monitor` and :class:`Window` do the rest. What the paper's figures
mean over several devices (``Window.figures``, ../shared/reference/metrics.md): AMU, its
fraction and PCU are averaged over the devices (the per-device load a user sizes hardware by),
energy is summed (what the node draws), and AEC is that energy over the window — never divided
by the device count, whether the energy comes from the counters or from integrated polled power.

Ranks: local rank 0 measures its node, every GPU of it; another rank of the same node reads
nothing, so a node's energy is counted once, not once per rank (pretraining then sums the nodes'
energies: tests/pretrain/test_two_ranks_one_node.py runs that end to end).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import record_consistency as rc

from effbench import runner
from effbench.measure.backends import NullBackend, NvmlBackend
from effbench.measure.monitor import Monitor
from effbench.record import flatten

pynvml = pytest.importorskip("pynvml")

GB = 1e9


class Clock:
    """Monotonic seconds the test sets by hand (no wall-clock rate is assumed anywhere)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ScriptedNvml:
    """Two GPUs as NVML reports them, as functions of the scripted time ``clock.t``:

    - GPU 0: 4 GB used of 16 GB, 50 % busy, a steady 100 W;
    - GPU 1: memory rising 6 → 10 GB over [0, 4] s of 80 GB, 100 % busy, power rising 200 → 400 W.

    Energy counters (mJ since the driver loaded, different starting values) are the exact
    integrals of those powers; ``counter=False`` is a GPU without one (pre-Volta: NVMLError).
    """

    def __init__(self, clock: Clock, counter: bool = True) -> None:
        self.clock, self.counter = clock, counter
        self.counter_reads = 0

    # -- the script ---------------------------------------------------------------------------
    def mem_used(self, i: int) -> float:
        return 4 * GB if i == 0 else (6 + self.clock.t) * GB

    def power_w(self, i: int) -> float:
        return 100.0 if i == 0 else 200.0 + 50.0 * self.clock.t

    def energy_mj(self, i: int) -> int:
        t = self.clock.t
        joules = 100.0 * t if i == 0 else 200.0 * t + 25.0 * t * t  # ∫ power dt from t = 0
        return round(5e6 * (i + 1) + 1000.0 * joules)

    # -- pynvml's functions -------------------------------------------------------------------
    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        fns = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: None,
            "nvmlDeviceGetCount": lambda: 2,
            "nvmlDeviceGetHandleByIndex": lambda i: i,
            "nvmlDeviceGetTotalEnergyConsumption": self._energy,
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=self.mem_used(h), total=(16 if h == 0 else 80) * GB),
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=50 if h == 0 else 100),
            "nvmlDeviceGetPowerUsage": lambda h: round(self.power_w(h) * 1000),  # mW
            "nvmlDeviceGetName": lambda h: b"Scripted H100",
            "nvmlSystemGetDriverVersion": lambda: b"550.0",
        }
        for name, fn in fns.items():
            monkeypatch.setattr(pynvml, name, fn)

    def _energy(self, h: int) -> int:
        if not self.counter:
            raise pynvml.NVMLError_NotSupported()
        self.counter_reads += 1
        return self.energy_mj(h)


def two_gpu_window(monkeypatch: pytest.MonkeyPatch, counter: bool = True, marks: bool = False):  # type: ignore[no-untyped-def]
    """A [0, 4] s window over the two scripted GPUs, sampled once a second (scripted time)."""
    clock = Clock()
    nvml = ScriptedNvml(clock, counter)
    nvml.install(monkeypatch)
    backend = NvmlBackend()
    mon = Monitor(backend=backend, interval_s=1.0, clock=clock)  # no sampler thread: samples by hand
    mon.begin_window("w")
    for t in (1.0, 2.0, 3.0):
        clock.t = t
        mon.mark() if marks else mon.sample_now()
    clock.t = 4.0
    w = mon.end_window("w")
    mon.stop()
    return w, backend


def test_two_devices_memory_and_utilisation_are_averaged_energy_is_summed(monkeypatch):
    w, backend = two_gpu_window(monkeypatch)
    assert backend.describe()["device_count"] == 2
    f = w.figures()
    # AMU: GPU 0 averages 4 GB, GPU 1 (6 → 10 GB) 8 GB: the mean over devices is 6 GB, not 12.
    assert f["amu_gb"].value == pytest.approx(6.0)
    assert f["amu_frac"].value == pytest.approx((4 / 16 + 8 / 80) / 2)  # each over its own total
    assert f["peak_mem_gb"].value == pytest.approx(10.0)  # the fuller device's largest sample
    assert f["pcu_frac"].value == pytest.approx(0.75)  # (50 % + 100 %) / 2
    # Energy: 100 W × 4 s + (200 → 400 W) over 4 s = 400 + 1200 J, from the two counters together.
    assert f["energy_j"].value == pytest.approx(1600.0)
    assert f["energy_j"].source == "nvml_energy_counter"
    assert f["aec_w"].value == pytest.approx(400.0)  # the node's draw: 100 W + 300 W on average


def test_two_devices_without_counters_integrate_each_devices_polled_power(monkeypatch):
    w, _ = two_gpu_window(monkeypatch, counter=False)
    f = w.figures()
    assert f["energy_j"].source == "nvml_power_poll"
    # ∫ over [0, 4] s of 100 W (400 J) plus 200 → 400 W (1200 J): the sum, not the mean over devices.
    assert f["energy_j"].value == pytest.approx(1600.0)
    assert f["aec_w"].value == pytest.approx(400.0)
    assert f["amu_gb"].value == pytest.approx(6.0)


def test_two_devices_sub_window_intervals_contain_their_values(monkeypatch):
    w, _ = two_gpu_window(monkeypatch, marks=True)
    subs = w.sub_windows(4)
    # Each 1 s step: AMU (4 + (6.5 + i)) / 2 GB; energy 100 J + ∫ of GPU 1's ramp over [i, i + 1].
    assert [s.figures()["amu_gb"].value for s in subs] == pytest.approx([5.25, 5.75, 6.25, 6.75])
    assert [s.energy().value for s in subs] == pytest.approx([100 + 225, 100 + 275, 100 + 325, 100 + 375])
    figs = w.spread_figures(4)
    assert figs["amu_gb"].value == pytest.approx(6.0) and figs["energy_j"].value == pytest.approx(1600.0)
    assert figs["aec_w"].value == pytest.approx(400.0)
    row = {"cell": "two-gpus", **flatten({k: v for k, v in figs.items()})}
    assert row["amu_gb__ci_low"] is not None and row["energy_j__ci_low"] is not None
    rc.check_intervals(row)


# --- two ranks of one node ------------------------------------------------------------------------


def test_two_ranks_of_one_node_read_the_nodes_counters_once(monkeypatch, tmp_path):
    """torchrun's two processes on one node (LOCAL_WORLD_SIZE=2): rank 0 (local rank 0) measures
    the node's two GPUs, rank 1 reads nothing and writes nothing. So the energy a job adds over
    its measuring ranks is the node's once (1600 J over the window), not once per rank."""
    clock = Clock()
    nvml = ScriptedNvml(clock)
    nvml.install(monkeypatch)
    settings = {"model": "m", "precision": "bf16", "device": "cuda", "seed": 0, "measure": {"interval_s": 600.0}}  # edges only
    measured = {}

    def work(mon):  # type: ignore[no-untyped-def]
        clock.t = 0.0
        mon.begin_window("w")
        clock.t = 4.0
        w = mon.end_window("w")
        measured[type(mon.backend).__name__] = w.figures()
        return {"seconds": w.seconds, "params_total": 1, **w.figures()}

    for rank in (1, 0):  # rank 1 first: it must not touch the node's counters
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        cell = runner.Cell.from_settings("quantize", settings, record_path=tmp_path / "record.parquet",
                                         samples_path=tmp_path / "samples.parquet", config_hash="t", libraries=[])
        reads = nvml.counter_reads
        assert runner.run_cell(cell, work) == "ok"
        if rank == 1:
            assert nvml.counter_reads == reads  # rank 1 opened no NVML counter
            assert not (tmp_path / "record.parquet").exists()
    assert set(measured) == {"NullBackend", "NvmlBackend"}
    assert measured["NullBackend"]["energy_j"].value is None
    assert measured["NullBackend"]["energy_j"].missing_reason == NullBackend.energy_missing_reason
    node = measured["NvmlBackend"]["energy_j"].value
    assert node == pytest.approx(1600.0)
    ranks_total = sum(f["energy_j"].value or 0.0 for f in measured.values())
    assert ranks_total == pytest.approx(1600.0)  # the node once
