"""The measurement core every stage wraps around its work (in the style of Zeus's windows).

    with Monitor(device="auto", interval_s=0.1, sync=torch.cuda.synchronize) as mon:
        mon.begin_window("train")
        ...  # the work
        window = mon.end_window("train")
    figures = window.figures()        # AMU, PCU, AEC, energy, peak memory, each with its source
    samples = mon.samples_frame()     # the raw long table for samples.parquet

A background thread samples memory, utilisation and power; energy is read from the
hardware counter at the window's edges (after ``sync``), because polled power misses
bursts shorter than the sampling period.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from . import formulas
from .backends import Backend, Row, open_backend
from .figure import Figure


@dataclass
class Window:
    name: str
    t0: float  # monotonic seconds
    t1: float
    energy_start_j: float | None
    energy_end_j: float | None
    energy_source: str | None
    energy_missing_reason: str | None
    mem_source: str
    util_source: str
    # per key: device -> [(t, value)]
    series: dict[str, dict[int, list[tuple[float, float]]]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    def _per_device(self, key: str) -> dict[int, tuple[list[float], list[float]]]:
        return {d: ([t for t, _ in pts], [v for _, v in pts]) for d, pts in self.series.get(key, {}).items() if pts}

    def energy(self) -> Figure:
        if self.energy_start_j is not None and self.energy_end_j is not None:
            return Figure.of(self.energy_end_j - self.energy_start_j, self.energy_source or "counter")
        power = self._per_device("power_w")
        if power:  # a GPU without an energy counter: integrate polled power (under-samples bursts)
            total = sum(formulas.energy_from_power(ts, vs, self.t0, self.t1) for ts, vs in power.values())
            return Figure.of(total, "nvml_power_poll")
        return Figure.missing(self.energy_missing_reason or "no energy counter on this host")

    def figures(self) -> dict[str, Figure]:
        """AMU (GB, fraction), peak memory, PCU, energy and AEC over this window.

        Memory and utilisation are averaged over devices (the per-device load a user sizes
        hardware by); energy is summed over devices (what the node draws).
        """
        out: dict[str, Figure] = {}
        mem = self._per_device("mem_used_bytes")
        total = self._per_device("mem_total_bytes")
        if mem:
            amus = [formulas.amu_gb(ts, vs, self.t0, self.t1) for ts, vs in mem.values()]
            out["amu_gb"] = Figure.of(sum(amus) / len(amus), self.mem_source)
            out["peak_mem_gb"] = Figure.of(
                max(max(vs) for _, vs in mem.values()) / formulas.GB, self.mem_source + "_max_sample"
            )
            if total:
                fracs = [
                    formulas.amu_fraction(ts, vs, max(total[d][1]), self.t0, self.t1) for d, (ts, vs) in mem.items()
                ]
                out["amu_frac"] = Figure.of(sum(fracs) / len(fracs), self.mem_source + "/total")
        else:
            for k in ("amu_gb", "peak_mem_gb", "amu_frac"):
                out[k] = Figure.missing("no memory samples in the window")
        util = self._per_device("util_percent")
        if util:
            pcus = [formulas.pcu(ts, vs, self.t0, self.t1) for ts, vs in util.values()]
            out["pcu_frac"] = Figure.of(sum(pcus) / len(pcus), self.util_source)
        else:
            out["pcu_frac"] = Figure.missing("no utilisation samples in the window")
        energy = self.energy()
        out["energy_j"] = energy
        out["aec_w"] = energy.derive(lambda e: formulas.average_power_w(e, self.seconds), "/window")
        return out


class Monitor:
    """Background sampler plus named measurement windows over one backend."""

    def __init__(
        self,
        device: str = "auto",
        interval_s: float = 0.1,
        sync: Callable[[], None] | None = None,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if backend is None:
            backend, self.nvml_unavailable_reason = open_backend(device)
        else:
            self.nvml_unavailable_reason = None
        self.backend = backend
        self._clock = clock  # monotonic seconds; a test may script it
        self.interval_s = interval_s
        self._sync = sync
        self._rows: list[tuple[float, int, str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: dict[str, tuple[float, float | None]] = {}
        self.wall_t0 = time.time()
        self.mono_t0 = clock()

    # -- sampling -------------------------------------------------------------
    def sample_now(self) -> float:
        """Read the backend once; returns the time the reading is stamped with."""
        t = self._clock()
        rows: list[Row] = self.backend.read()
        with self._lock:
            self._rows.extend((t, d, k, v) for d, k, v in rows)
        return t

    def _run(self) -> None:
        next_t = self._clock()
        while not self._stop.is_set():
            self.sample_now()
            next_t += self.interval_s
            # Sleep to a fixed schedule so sampling does not drift with read time.
            self._stop.wait(max(0.0, next_t - self._clock()))

    def start(self) -> "Monitor":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="effbench-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.backend.close()

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- windows --------------------------------------------------------------
    def _edge(self) -> tuple[float, float | None]:
        if self._sync is not None:
            self._sync()  # the device must have finished the work before the counter is read
        # The edge is the edge sample's own timestamp, so the window's [t0, t1] filter keeps it
        # (reading the clock after the sample dropped the window's first sample).
        t = self.sample_now()
        return t, self.backend.energy_j()

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise RuntimeError(f"window {name!r} is already open")
        self._open[name] = self._edge()

    def end_window(self, name: str) -> Window:
        if name not in self._open:
            raise RuntimeError(f"window {name!r} was never begun")
        t0, e0 = self._open.pop(name)
        t1, e1 = self._edge()
        series: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        with self._lock:
            for t, d, k, v in self._rows:
                if t0 <= t <= t1:
                    series[k][d].append((t, v))
        return Window(
            name=name,
            t0=t0,
            t1=t1,
            energy_start_j=e0,
            energy_end_j=e1,
            energy_source=self.backend.energy_source,
            energy_missing_reason=getattr(self.backend, "energy_missing_reason", None),
            mem_source=self.backend.mem_source,
            util_source=self.backend.util_source,
            series={k: dict(v) for k, v in series.items()},
        )

    def samples_rows(self) -> list[dict[str, object]]:
        """All raw samples as long rows: t_s since the monitor began, device, key, value."""
        with self._lock:
            rows = list(self._rows)
        return [
            {"t_s": t - self.mono_t0, "wall_time": self.wall_t0 + (t - self.mono_t0), "device": d, "key": k,
             "value": v, "backend": self.backend.name}
            for t, d, k, v in rows
        ]

    def describe(self) -> dict[str, object]:
        return self.backend.describe()
