"""The measurement core: windows, figures with sources, missing energy, the NVML error path."""

import os
import time

import pytest

from effbench.measure import backends
from effbench.measure.backends import BackendUnavailable, HostBackend, NvmlBackend, open_backend
from effbench.measure.monitor import Monitor


class ScriptedGpu:
    """A stand-in for the hardware boundary: readings and an energy counter from a script."""

    name = "scripted"
    mem_source = "scripted_mem"
    util_source = "scripted_util"
    energy_source = "scripted_counter"

    def __init__(self):
        self.t0 = time.monotonic()

    def read(self):
        return [(0, "mem_used_bytes", 4e9), (0, "mem_total_bytes", 16e9), (0, "util_percent", 50.0)]

    def energy_j(self):
        return 100.0 * (time.monotonic() - self.t0)  # a steady 100 W

    def describe(self):
        return {"device_kind": "cuda", "device_name": "scripted", "device_count": 1, "driver_version": "0"}

    def close(self):
        pass


def test_window_figures_from_a_scripted_device():
    synced = []
    with Monitor(backend=ScriptedGpu(), interval_s=0.01, sync=lambda: synced.append(1)) as mon:
        mon.begin_window("w")
        time.sleep(0.3)
        w = mon.end_window("w")
    fig = w.figures()
    assert len(synced) == 2  # the device is synchronised at both edges
    assert fig["amu_gb"].value == pytest.approx(4.0)
    assert fig["amu_gb"].source == "scripted_mem"
    assert fig["amu_frac"].value == pytest.approx(0.25)
    assert fig["pcu_frac"].value == pytest.approx(0.5)
    assert fig["energy_j"].source == "scripted_counter"
    assert fig["aec_w"].value == pytest.approx(100.0, rel=0.05)
    assert fig["energy_j"].value == pytest.approx(100.0 * w.seconds, rel=0.05)
    assert len(w.series["mem_used_bytes"][0]) >= 10  # the 100 Hz sampler ran


def test_host_backend_measures_this_process():
    with Monitor(device="cpu", interval_s=0.02) as mon:
        mon.begin_window("busy")
        t = time.monotonic()
        x = 0
        while time.monotonic() - t < 0.4:
            x += 1
        w = mon.end_window("busy")
        rows = mon.samples_rows()
    fig = w.figures()
    assert fig["amu_gb"].value > 0.01 and fig["amu_gb"].source == "psutil_rss"
    assert 0.1 < fig["pcu_frac"].value <= 1.0
    assert {r["key"] for r in rows} >= {"mem_used_bytes", "util_percent"}
    if not os.path.exists("/sys/class/powercap"):
        # No counter on this host: energy is missing with a reason, never 0.
        assert fig["energy_j"].value is None and fig["aec_w"].value is None
        assert "no energy counter" in fig["aec_w"].missing_reason


def test_nvml_error_path_falls_back_to_the_host(monkeypatch):
    pynvml = pytest.importorskip("pynvml")

    def fail():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    with pytest.raises(BackendUnavailable):
        NvmlBackend()
    backend, why = open_backend("auto")
    assert isinstance(backend, HostBackend) and "NVML unavailable" in why
    with pytest.raises(BackendUnavailable):
        open_backend("cuda")


def test_window_misuse_raises():
    with Monitor(backend=ScriptedGpu(), interval_s=0.05) as mon:
        mon.begin_window("a")
        with pytest.raises(RuntimeError):
            mon.begin_window("a")
        with pytest.raises(RuntimeError):
            mon.end_window("b")


def test_rapl_reads_a_powercap_tree_and_handles_wraparound(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000")
    (zone / "energy_uj").write_text("900000")
    rapl = backends.RaplEnergy(root=str(tmp_path))
    (zone / "energy_uj").write_text("100000")  # wrapped: +200000 µJ
    assert rapl.energy_j() == pytest.approx(0.2)
    with pytest.raises(BackendUnavailable):
        backends.RaplEnergy(root=str(tmp_path / "absent"))
