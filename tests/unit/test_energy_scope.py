"""Energy scope: what each backend's counter covers, and that it reaches the record."""

import sys
import types

import pytest

from effbench.measure import backends, energy_scope
from effbench.measure.energy_scope import (
    NVML_ARCH_BLACKWELL,
    NVML_ARCH_HOPPER,
    SCOPE_NOTES,
    host_has_grace,
    mixed_scope_flag,
    nvidia_scope,
)
from effbench.record_columns import ENERGY_SCOPES

NVML_ARCH_AMPERE = 7

GRACE_CPUINFO = "processor\t: 0\nBogoMIPS\t: 2000.00\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd4f\n"
ALTRA_CPUINFO = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"  # Ampere Altra: Neoverse N1
XEON_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"


@pytest.mark.parametrize("name", ["NVIDIA GH200 480GB", "GH200 144G HBM3e", "NVIDIA GB200"])
def test_a_grace_superchip_is_named_module_whatever_the_host_says(name):
    assert nvidia_scope(name) == "module"
    assert nvidia_scope(name, NVML_ARCH_HOPPER, "x86_64", grace_cpu=False) == "module"


@pytest.mark.parametrize("name", ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB"])
def test_other_nvidia_boards_are_gpu(name):
    assert nvidia_scope(name, NVML_ARCH_HOPPER, "x86_64", grace_cpu=False) == "gpu"
    assert nvidia_scope(name) == "gpu"


def test_an_unnamed_hopper_or_blackwell_on_a_grace_host_is_module():
    # A driver that names the superchip's GPU "NVIDIA H100 ..." still runs on a Grace: the arch and the host decide.
    for arch in (NVML_ARCH_HOPPER, NVML_ARCH_BLACKWELL):
        assert nvidia_scope("NVIDIA H100 96GB HBM3", arch, "aarch64", grace_cpu=True) == "module"
        assert nvidia_scope("NVIDIA H100 96GB HBM3", arch, "aarch64", c2c_enabled=True) == "module"
    # An H100 PCIe card in another Arm server (no Grace, no C2C), or an A100 on a Grace host: the board.
    assert nvidia_scope("NVIDIA H100 PCIe", NVML_ARCH_HOPPER, "aarch64", grace_cpu=False, c2c_enabled=False) == "gpu"
    assert nvidia_scope("NVIDIA A100-SXM4-80GB", NVML_ARCH_AMPERE, "aarch64", grace_cpu=True) == "gpu"
    assert nvidia_scope("NVIDIA H100 80GB HBM3", None, "aarch64", grace_cpu=True) == "gpu"  # arch unread


def test_grace_host_detection_from_soc_id_or_cpuinfo():
    assert host_has_grace(cpuinfo="", soc_id="jep106:036b:0241\n")
    assert host_has_grace(cpuinfo=GRACE_CPUINFO, soc_id="")
    assert not host_has_grace(cpuinfo=ALTRA_CPUINFO, soc_id="jep106:0a16:0001")
    assert not host_has_grace(cpuinfo=XEON_CPUINFO, soc_id="")


def test_scope_notes_and_the_mixed_scope_flag():
    assert set(SCOPE_NOTES) == set(ENERGY_SCOPES) and energy_scope.SCOPES == ENERGY_SCOPES
    assert "Grace CPU" in SCOPE_NOTES["module"] and SCOPE_NOTES["module"].startswith("module:")
    assert mixed_scope_flag(["gpu", "gpu", None]) is None  # no energy (None) is not another scope
    assert mixed_scope_flag([]) is None and mixed_scope_flag([None, None]) is None
    flag = mixed_scope_flag(["gpu", "module", None, "gpu"])
    assert flag is not None and "gpu, module" in flag and SCOPE_NOTES["module"] in flag


# -- the backends (fakes only at the hardware boundary: pynvml, the powercap tree) ----------------

class FakeNvmlError(Exception):
    pass


def fake_pynvml(name, arch=NVML_ARCH_HOPPER, c2c=None, energy=True):
    """A pynvml module over one GPU: what NvmlBackend calls, from a script."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNvmlError
    m.nvmlInit = m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    m.nvmlDeviceGetName = lambda h: name
    m.nvmlSystemGetDriverVersion = lambda: b"560.35.03"
    m.nvmlDeviceGetArchitecture = lambda h: arch
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=1e9, total=8e10)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=50)
    m.nvmlDeviceGetPowerUsage = lambda h: 300_000

    def energy_mj(h):
        if not energy:
            raise FakeNvmlError("Not Supported")
        return 123_000

    def c2c_info(h):
        if c2c is None:
            raise FakeNvmlError("Not Supported")
        return types.SimpleNamespace(isC2cEnabled=int(c2c))

    m.nvmlDeviceGetTotalEnergyConsumption = energy_mj
    m.nvmlDeviceGetC2cModeInfoV = c2c_info
    return m


def nvml_backend(monkeypatch, name, machine="x86_64", grace=False, **kw):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(name, **kw))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(energy_scope, "host_machine", lambda: machine)
    monkeypatch.setattr(energy_scope, "host_has_grace", lambda: grace)
    return backends.NvmlBackend()


def test_nvml_backend_describes_its_scope(monkeypatch):
    assert nvml_backend(monkeypatch, "NVIDIA GH200 480GB", machine="aarch64", grace=True).describe()["energy_scope"] == "module"
    assert nvml_backend(monkeypatch, "NVIDIA H100 80GB HBM3").describe()["energy_scope"] == "gpu"
    assert nvml_backend(monkeypatch, "NVIDIA H200").describe()["energy_scope"] == "gpu"
    # The superchip's GPU under another name, told apart by its C2C link (the host's CPU unread).
    assert nvml_backend(monkeypatch, "NVIDIA H100 96GB HBM3", machine="aarch64", c2c=True).describe()["energy_scope"] == "module"
    assert nvml_backend(monkeypatch, "NVIDIA H100 PCIe", machine="aarch64", c2c=False).describe()["energy_scope"] == "gpu"


def test_host_backend_scope_is_cpu_package_with_rapl_and_none_without(tmp_path, monkeypatch):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000")
    (zone / "energy_uj").write_text("5")
    real = backends.RaplEnergy

    class TreeRapl(real):  # type: ignore[misc, valid-type]
        def __init__(self):
            super().__init__(root=str(tmp_path))

    class NoRapl(real):  # type: ignore[misc, valid-type]
        def __init__(self):
            super().__init__(root=str(tmp_path / "absent"))

    monkeypatch.setattr(backends, "RaplEnergy", TreeRapl)
    assert backends.HostBackend().describe()["energy_scope"] == "cpu_package"
    monkeypatch.setattr(backends, "RaplEnergy", NoRapl)
    assert backends.HostBackend().describe()["energy_scope"] is None


# -- the record ----------------------------------------------------------------------------------

def run_quantize_cell(tmp_path, monkeypatch, backend):
    from effbench import runner
    from effbench.record import WINDOW_FIGURES, read_records

    if backend is not None:
        monkeypatch.setattr(runner, "open_backend", lambda *a, **k: (backend, None))
    settings = {"model": "m", "precision": "bf16", "device": "cpu", "seed": 0, "measure": {"interval_s": 0.05}}
    cell = runner.Cell.from_settings("quantize", settings, record_path=tmp_path / "record.parquet",
                                     samples_path=tmp_path / "samples.parquet", config_hash="t", libraries=[])

    def work(mon):
        mon.begin_window("w")
        w = mon.end_window("w")
        figs = w.figures()
        return {"seconds": w.seconds, "params_total": 1, **{k: figs[k] for k in WINDOW_FIGURES}}

    assert runner.run_cell(cell, work) == "ok"
    (r,) = read_records([tmp_path / "record.parquet"]).to_pylist()
    return r


def test_a_record_on_this_cpu_host_without_rapl_has_no_energy_scope(tmp_path, monkeypatch):
    # The real host backend; its RAPL tree is made empty so the test means the same on any host
    # (this build machine has no /sys/class/powercap at all).
    real = backends.RaplEnergy

    class NoRapl(real):  # type: ignore[misc, valid-type]
        def __init__(self):
            super().__init__(root=str(tmp_path / "no-powercap"))

    monkeypatch.setattr(backends, "RaplEnergy", NoRapl)
    r = run_quantize_cell(tmp_path, monkeypatch, None)
    assert r["device_kind"] == "cpu" and r["energy_scope"] is None and r["energy_j"] is None


def test_a_backend_that_reports_a_scope_puts_it_in_the_record(tmp_path, monkeypatch):
    gh200 = nvml_backend(monkeypatch, "NVIDIA GH200 480GB", machine="aarch64", grace=True)
    r = run_quantize_cell(tmp_path, monkeypatch, gh200)
    assert r["device_name"] == "NVIDIA GH200 480GB" and r["energy_scope"] == "module"
    assert r["energy_j"] == 0.0 and r["energy_j__source"] == "nvml_energy_counter"  # the fake counter stands still
