"""The measurement core: windows, figures with sources, missing energy, the NVML error path."""

import os
import time

import pytest

from effbench.measure import backends
from effbench.measure.backends import BackendUnavailable, HostBackend, NvmlBackend, open_backend
from effbench.measure.monitor import Monitor


class ScriptedClock:
    """Monotonic time the test advances by hand, so a 1 s sampling interval costs no wall time."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class ScriptedGpu:
    """A stand-in for the hardware boundary: readings and an energy counter from a script. The
    counter runs on ``clock`` (scripted time), so no figure depends on how fast this host runs."""

    name = "scripted"
    mem_source = "scripted_mem"
    util_source = "scripted_util"
    energy_source = "scripted_counter"

    def __init__(self, clock=None):
        self.clock = clock or ScriptedClock()
        self.reads = 0

    def read(self):
        self.reads += 1
        return [(0, "mem_used_bytes", 4e9), (0, "mem_total_bytes", 16e9), (0, "util_percent", 50.0)]

    def energy_j(self):
        return 100.0 * self.clock.t  # a steady 100 W

    def describe(self):
        return {"device_kind": "cuda", "device_name": "scripted", "device_count": 1, "driver_version": "0"}

    def close(self):
        pass


def wait_for(condition, what, timeout_s=30.0):
    """Poll ``condition`` until it holds (a generous bound for a loaded, shared host)."""
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, f"gave up after {timeout_s} s waiting for {what}"
        time.sleep(0.005)


class RampGpu(ScriptedGpu):
    """Memory rising 0.3 GB per second of scripted time; each read takes 1 ms (as an NVML read does)."""

    def __init__(self, clock):
        self.clock = clock

    def read(self):
        mem = 0.3e9 * self.clock.t
        self.clock.t += 0.001
        return [(0, "mem_used_bytes", mem), (0, "mem_total_bytes", 16e9), (0, "util_percent", 50.0)]

    def energy_j(self):
        return 100.0 * self.clock.t


def test_window_keeps_the_sample_taken_at_its_start():
    # Regression: the edge sample was taken before t0 was read, so the window dropped it and
    # held the next sample (1 s later, higher on a ramp) back to its start.
    clock = ScriptedClock()
    mon = Monitor(backend=RampGpu(clock), interval_s=1.0, clock=clock)  # sampler thread not started
    mon.begin_window("ramp")
    for t in (1.0, 2.0, 3.0):
        clock.t = t
        mon.sample_now()  # what the 1 s sampler would do
    clock.t = 4.0
    w = mon.end_window("ramp")
    # True AMU of 0.3·t GB over [0, 4] s is 0.6 GB (edge sample values are exact on the ramp).
    assert w.figures()["amu_gb"].value == pytest.approx(0.6, abs=0.002)


def test_window_figures_from_a_scripted_device():
    """The sampler thread runs (real time: it takes samples while the window is open, however
    slowly this host lets it), and the figures come from the script's own clock."""
    synced = []
    clock = ScriptedClock()
    gpu = ScriptedGpu(clock)
    with Monitor(backend=gpu, interval_s=0.01, sync=lambda: synced.append(1), clock=clock) as mon:
        mon.begin_window("w")
        reads = gpu.reads
        wait_for(lambda: gpu.reads >= reads + 10, "10 samples from the sampler thread")
        clock.t = 3.0
        w = mon.end_window("w")
    fig = w.figures()
    assert len(synced) == 2  # the device is synchronised at both edges
    assert fig["amu_gb"].value == pytest.approx(4.0)
    assert fig["amu_gb"].source == "scripted_mem"
    assert fig["amu_frac"].value == pytest.approx(0.25)
    assert fig["pcu_frac"].value == pytest.approx(0.5)
    assert fig["energy_j"].source == "scripted_counter"
    assert w.seconds == 3.0
    assert fig["energy_j"].value == pytest.approx(300.0)
    assert fig["aec_w"].value == pytest.approx(100.0)
    assert len(w.series["mem_used_bytes"][0]) >= 10  # the sampler's readings fell in the window


def test_host_backend_measures_this_process(tmp_path, monkeypatch):
    """PCU of one busy thread is this process's own CPU time over the window's time on the cores
    it may use (1/cores on an idle host, whatever the core count); with no RAPL counter (an empty
    powercap tree, wherever the test runs) energy is missing with a reason, never 0."""

    class EmptyPowercap(backends.RaplEnergy):
        def __init__(self) -> None:
            super().__init__(root=str(tmp_path))

    monkeypatch.setattr(backends, "RaplEnergy", EmptyPowercap)
    cores = len(os.sched_getaffinity(0))
    with Monitor(device="cpu", interval_s=0.02) as mon:
        mon.begin_window("busy")
        cpu0, t = time.process_time(), time.monotonic()
        n0 = len(mon.samples_rows())
        x = 0
        # Busy for at least 0.5 s and until the sampler has read the tree 10 times (slowly on a
        # loaded host: the bound is what this process got, not a rate), at most 30 s.
        while time.monotonic() - t < 30:
            x += 1
            if x % 2000 == 0 and time.monotonic() - t >= 0.5 and len(mon.samples_rows()) - n0 >= 10 * 3:
                break
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t
        w = mon.end_window("busy")
        rows = mon.samples_rows()
    fig = w.figures()
    assert fig["amu_gb"].value <= fig["peak_mem_gb"].value
    assert fig["amu_gb"].source.split("+")[0] == "psutil_pss"  # Linux: PSS (+rss_delta between PSS reads)
    expected = cpu / (wall * cores)
    assert fig["pcu_frac"].value == pytest.approx(expected, abs=0.25 / cores), (cores, cpu, wall)
    assert {r["key"] for r in rows} >= {"mem_used_bytes", "util_percent"}
    assert fig["energy_j"].value is None and fig["aec_w"].value is None
    assert "no energy counter" in fig["aec_w"].missing_reason and "RAPL" in fig["aec_w"].missing_reason


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
    with pytest.raises(RuntimeError, match="open window"):
        Monitor(backend=ScriptedGpu(), interval_s=0.05).mark()


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


def ramp_window(marks=(1.0, 2.0, 3.0), hz=12.0):
    """A 4 s window over RampGpu at a steady 100 W, marked (a step boundary) at ``marks``."""
    clock = ScriptedClock()
    gpu = RampGpu(clock)
    gpu.energy_update_hz = hz
    synced = []
    mon = Monitor(backend=gpu, interval_s=1.0, clock=clock, sync=lambda: synced.append(clock.t))
    mon.begin_window("ramp")
    for t in marks:
        clock.t = t
        mon.mark()
    clock.t = 4.0
    return mon.end_window("ramp"), synced


def test_marks_give_sub_windows_with_batch_means_intervals():
    w, synced = ramp_window()
    assert len(synced) == 5  # each mark syncs the device before reading the counter
    subs = w.sub_windows(4)
    assert [s.steps for s in subs] == [1, 1, 1, 1]
    # AMU of 0.3·t GB over each 1 s step: 0.15, 0.45, 0.75, 1.05; steady 100 W in each
    assert [s.figures()["amu_gb"].value for s in subs] == pytest.approx([0.15, 0.45, 0.75, 1.05], abs=2e-3)
    assert [s.energy().value for s in subs] == pytest.approx([100.0] * 4, rel=1e-2)
    figs = w.spread_figures(4)
    amu = figs["amu_gb"]
    assert amu.value == pytest.approx(0.6, abs=2e-3)
    sd = 0.3 * (5 / 3) ** 0.5
    # 0.6 ± 3.182446 · sd / 2 = 0.6 ± 0.616 would reach below 0 GB: cut at 0, the upper side kept.
    assert amu.interval.high - amu.value == pytest.approx(3.182446 * sd / 2, rel=1e-2)
    assert amu.interval.low == 0.0
    assert amu.interval.n == 4 and amu.interval.method == "ratio_batch_means_k=4"
    assert figs["aec_w"].interval.half_width == pytest.approx(0.0, abs=0.5)  # a steady draw: no spread
    assert figs["energy_j"].interval.low <= figs["energy_j"].value <= figs["energy_j"].interval.high
    assert figs["peak_mem_gb"].interval is None
    # two sub-windows of two steps each
    assert [s.steps for s in w.sub_windows(2)] == [2, 2]
    with pytest.raises(ValueError, match="cannot fill"):
        w.sub_windows(5)


def test_without_marks_sub_windows_split_time_and_have_no_energy():
    w, _ = ramp_window(marks=())
    subs = w.sub_windows(2)
    assert [s.seconds for s in subs] == pytest.approx([w.seconds / 2] * 2)
    assert subs[0].energy().value is None and "no marks" in subs[0].energy().missing_reason
    figs = w.spread_figures(2)
    assert figs["amu_gb"].interval is not None and figs["aec_w"].interval is None


def test_energy_window_flag_counts_counter_updates():
    w, _ = ramp_window()
    assert w.energy_flags()["energy_counter_updates"] == pytest.approx(48.0, rel=1e-2)  # 4 s × 12/s
    assert w.energy_flags()["energy_window_short"] is False
    assert w.sub_windows(4)[0].energy_flags()["energy_window_short"] is True  # 1 s: 12 updates
    w, _ = ramp_window(hz=None)
    assert w.energy_flags() == {"energy_counter_updates": None, "energy_window_short": None}


def test_host_memory_is_pss_so_shared_pages_count_once():
    # A forked child shares the parent's ~100 MB: summed RSS counts it twice, PSS once.
    import psutil

    ballast = bytearray(b"\x01" * 100_000_000)
    pid = os.fork()
    if pid == 0:  # the child only holds the shared pages
        time.sleep(60)
        os._exit(0)
    try:
        backend = HostBackend()
        assert backend.mem_source == "psutil_pss"
        mem = dict(((k, v) for _, k, v in backend.read()))["mem_used_bytes"]
        rss_sum = sum(p.memory_info().rss for p in [psutil.Process()] + psutil.Process().children(recursive=True))
        assert len(ballast) <= mem < 0.75 * rss_sum
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_pss_reads_are_throttled_and_rss_tracks_in_between():
    """PSS costs a page-table walk (~45 ms for a vLLM process): between two PSS reads a process's
    memory is its last PSS plus its RSS change since, which follows a new private allocation."""
    backend = HostBackend()
    first = dict(((k, v) for _, k, v in backend.read()))["mem_used_bytes"]
    assert backend.mem_source == "psutil_pss"  # the first read is exact
    backend.PSS_DUTY = 1e-12  # the next PSS read would be due in ages: RSS changes stand in
    ballast = bytearray(b"\x01" * 80_000_000)  # touched: 80 MB of private resident pages
    second = dict(((k, v) for _, k, v in backend.read()))["mem_used_bytes"]
    assert backend.mem_source == "psutil_pss+rss_delta"
    assert 0.9 * len(ballast) <= second - first <= 1.2 * len(ballast)
    exact = float(psutil_process().memory_full_info().pss)
    assert second == pytest.approx(exact, rel=0.05)  # the estimate agrees with a fresh PSS read


def psutil_process():  # type: ignore[no-untyped-def]
    import psutil

    return psutil.Process()


class FailingGpu(RampGpu):
    """The ramp GPU whose reads, then whose energy counter, start raising at scripted times (an NVML
    error mid-run: a lost GPU); what the backend boundary of a real run would see."""

    class NVMLError(Exception):
        pass

    def __init__(self, clock, read_fails_at=None, energy_fails_at=None):
        super().__init__(clock)
        self.read_fails_at, self.energy_fails_at = read_fails_at, energy_fails_at
        self.calls = 0

    def read(self):
        if self.read_fails_at is not None and self.clock.t >= self.read_fails_at:
            self.calls += 1
            raise self.NVMLError("GPU is lost")
        return super().read()

    def energy_j(self):
        if self.energy_fails_at is not None and self.clock.t >= self.energy_fails_at:
            raise self.NVMLError("Unknown Error")
        return super().energy_j()


def failing_window(**fails):
    clock = ScriptedClock()
    gpu = FailingGpu(clock, **fails)
    mon = Monitor(backend=gpu, interval_s=1.0, clock=clock)
    mon.begin_window("w")
    for t in (1.0, 2.0, 3.0):
        clock.t = t
        mon.sample_now()
        mon.mark()
    clock.t = 4.0
    return mon, mon.end_window("w"), gpu


def test_readings_failing_mid_run_make_memory_and_utilisation_missing_with_the_reason():
    mon, w, gpu = failing_window(read_fails_at=2.5)
    figs = w.figures()
    for key in ("amu_gb", "peak_mem_gb", "amu_frac", "pcu_frac"):
        assert figs[key].value is None  # not a time average over the first 2.5 s only
        assert figs[key].missing_reason.startswith("scripted readings failed 3.0 s into the run (")
        assert "NVMLError: GPU is lost" in figs[key].missing_reason
    assert figs["energy_j"].value == pytest.approx(400.0, rel=0.01)  # the counter still works
    assert gpu.calls == 1  # a failed source is not read again
    spread = w.spread_figures(2)  # sub-windows before the failure do not bring the figure back
    assert spread["amu_gb"].value is None and spread["pcu_frac"].value is None
    mon.stop()  # the run goes on to write its record


def test_energy_counter_failing_mid_run_makes_energy_missing_not_polled():
    mon, w, _ = failing_window(energy_fails_at=2.0)
    figs = w.figures()
    assert figs["energy_j"].value is None and figs["aec_w"].value is None
    assert "scripted energy counter failed 2.0 s into the run" in figs["energy_j"].missing_reason
    assert figs["aec_w"].missing_reason == figs["energy_j"].missing_reason
    assert w.energy_flags() == {"energy_counter_updates": None, "energy_window_short": None}
    assert figs["amu_gb"].value == pytest.approx(0.6, abs=0.01)  # readings unaffected
    # A window that ended before the failure keeps its energy.
    early = w.sub_windows(4)[0]
    assert early.energy().value == pytest.approx(100.0, rel=0.01)


def test_a_failing_backend_does_not_stop_the_sampler_thread_or_describe():
    clock = ScriptedClock()
    gpu = FailingGpu(clock, read_fails_at=0.0, energy_fails_at=0.0)
    with Monitor(backend=gpu, interval_s=0.01) as mon:  # real time: the thread samples
        wait_for(lambda: mon.read_failure is not None, "the sampler thread's first (failing) read")
        mon.begin_window("w")
        w = mon.end_window("w")
        assert mon._thread is not None and mon._thread.is_alive()  # the failure did not end it
    assert gpu.calls == 1  # the failed source was not read again, by the thread nor the edges
    assert w.figures()["amu_gb"].value is None and mon.describe()["device_name"] == "scripted"


class GpuLostAfter(ScriptedGpu):
    """Readings and the energy counter work for ``ok_reads`` reads, then raise."""

    def __init__(self, ok_reads):
        super().__init__()
        self.left = ok_reads

    def read(self):
        self.left -= 1
        if self.left < 0:
            raise FailingGpu.NVMLError("GPU is lost")
        return super().read()

    def energy_j(self):
        if self.left < 0:
            raise FailingGpu.NVMLError("GPU is lost")
        return super().energy_j()


def test_run_cell_writes_the_record_with_the_lost_figures_missing(tmp_path, monkeypatch):
    from effbench import runner
    from effbench.record import WINDOW_FIGURES, read_records

    monkeypatch.setattr(runner, "open_backend", lambda *a, **k: (GpuLostAfter(ok_reads=5), None))
    settings = {"model": "m", "precision": "bf16", "device": "cuda", "seed": 0, "measure": {"interval_s": 0.01}}
    cell = runner.Cell.from_settings("quantize", settings, record_path=tmp_path / "record.parquet",
                                     samples_path=tmp_path / "samples.parquet", config_hash="t", libraries=[])

    def work(mon):
        mon.begin_window("w")
        # The sampler thread's 6th read fails: wait for it, however long a loaded host takes.
        wait_for(lambda: mon.read_failure is not None, "the backend's reads to fail")
        w = mon.end_window("w")  # the energy counter fails at this edge
        figs = w.figures()
        return {"seconds": w.seconds, "params_total": 1, **{k: figs[k] for k in WINDOW_FIGURES}}

    assert runner.run_cell(cell, work) == "ok"
    (r,) = read_records([tmp_path / "record.parquet"]).to_pylist()
    assert r["device_name"] == "scripted"  # described before the failure
    for k in WINDOW_FIGURES:  # memory and utilisation (readings), energy and AEC (counter)
        reason = r[k + "__missing"]
        assert r[k] is None and reason.startswith("scripted ") and " s into the run (" in reason, (k, reason)
        assert "NVMLError: GPU is lost" in reason
