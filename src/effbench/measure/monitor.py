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

Noise (sub-windows, batch means; see docs/noise.md). A stage marks step boundaries inside
an open window; each mark syncs the device, takes a sample and reads the energy counter::

    mon.begin_window("train")
    for step in steps:
        train_step()
        mon.mark()                       # after each step (or every few steps)
    window = mon.end_window("train")
    figs = window.spread_figures(k=8)    # as figures(), with 95 % intervals over 8 sub-windows
    subs = window.sub_windows(8)         # 8 sub-windows of round(i·n/8) marked steps (n = steps)
    # e.g. J/token: spread.ratio_interval([w.energy().value for w in subs],
    #                                     [tokens_per_step * w.steps for w in subs],
    #                                     spread.ratio_batch_means_method(8))

Without marks, ``sub_windows(k)`` splits the window into k equal spans of time; memory and
utilisation still get intervals, energy does not (the counter was read only at the edges).

A window also knows how many energy-counter updates fell inside it
(:meth:`Window.energy_flags`): fewer than :data:`MIN_ENERGY_UPDATES` makes its energy figures
too coarse to trust, and the record carries ``energy_window_short``.

Measurement faults. A backend whose reads start failing partway through a run (an NVML error:
the driver lost the GPU, a Xid, a permissions change) must not fail the run nor leave figures
computed from a silently truncated series. The monitor records the first failure of each kind
(:class:`SourceFailure`: when, what), stops using that source, and every window that ends after
it reports the affected figures missing with that reason: ``read()`` failing takes memory,
utilisation and polled power; ``energy_j()`` failing takes energy and AEC.

Reading the counter outside windows (:mod:`.phase_energy`). A serving loop that attributes energy
to engine steps reads the counter at each step's edges itself::

    read = mon.energy_reader()            # cheap; safe from the serving loop's thread
    e0 = read(); step(); e1 = read()      # J, as the windows' energy; None without a counter
    phase_energy.attribute(steps, mon.energy_update_period_s, mon.energy_missing_reason)

The reader shares the monitor's fault handling: its first failure is the energy counter's
failure (windows ending after it lose their energy too), and it returns None from then on.
Read ``energy_missing_reason`` after the steps, so a failure during them is named.

Foreign load. At each window's edges the monitor also reads the host's busy CPU time and its
job's process tree's (:func:`effbench.isolation.cpu_snapshot`; the tree is ``tree_pid`` and its
descendants, by default this process): :meth:`Window.foreign_cpu` gives the CPU time the rest of
the host used during the window, and whether it was enough to call the window shared.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .. import isolation
from .backends import Backend, Row, open_backend
from .figure import Figure
from .window import (  # noqa: F401  (re-exported: the stages import them from here)
    ENERGY_FLAGS,
    FOREIGN_COLUMNS,
    FOREIGN_SOURCE,
    MIN_ENERGY_UPDATES,
    Mark,
    SourceFailure,
    Window,
)

log = logging.getLogger("effbench.measure")

class Monitor:
    """Background sampler plus named measurement windows over one backend."""

    def __init__(
        self,
        device: str = "auto",
        interval_s: float = 0.1,
        sync: Callable[[], None] | None = None,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
        tree_pid: int | None = None,
    ) -> None:
        """tree_pid: the root of the job's process tree, whose CPU time is not foreign (default:
        this process; under torchrun the launcher, so every local rank is the job's)."""
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
        # One energy read at a time: the edges (this thread) and an energy_reader() (a serving
        # loop's thread) may read at once, and a RAPL read updates the backend's running total.
        self._energy_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: dict[str, Mark] = {}
        self._marks: list[Mark] = []
        self.wall_t0 = time.time()
        self.mono_t0 = clock()
        self.read_failure: SourceFailure | None = None
        self.energy_failure: SourceFailure | None = None
        self._described: dict[str, object] | None = None
        self.tree_pid = tree_pid or os.getpid()
        self._cpu_open: dict[str, isolation.CpuSnapshot | None] = {}
        self.last_window: Window | None = None  # the window ended last (each stage ends one)

    def _fail(self, what: str, t: float, exc: Exception) -> SourceFailure:
        """Record the first failure of a source; it is not read again."""
        wall = dt.datetime.fromtimestamp(self.wall_t0 + (t - self.mono_t0), dt.timezone.utc)
        reason = (f"{self.backend.name} {what} failed {t - self.mono_t0:.1f} s into the run "
                  f"({wall.strftime('%Y-%m-%dT%H:%M:%SZ')}): {type(exc).__name__}: {exc}")
        log.error("measurement fault, figures from it are missing from here on: %s", reason)
        return SourceFailure(t, what, reason)

    # -- sampling -------------------------------------------------------------
    def sample_now(self) -> float:
        """Read the backend once; returns the time the reading is stamped with."""
        t = self._clock()
        if self.read_failure is not None:
            return t
        try:
            rows: list[Row] = self.backend.read()
        except Exception as exc:  # noqa: BLE001 - any hardware-library error: the run goes on
            with self._lock:
                if self.read_failure is None:
                    self.read_failure = self._fail("readings", t, exc)
            return t
        with self._lock:
            self._rows.extend((t, d, k, v) for d, k, v in rows)
        return t

    def _energy_now(self, t: float) -> float | None:
        with self._energy_lock:
            if self.energy_failure is not None:
                return None
            try:
                return self.backend.energy_j()
            except Exception as exc:  # noqa: BLE001 - as in sample_now
                self.energy_failure = self._fail("energy counter", t, exc)
                return None

    def energy_reader(self) -> Callable[[], float | None]:
        """A function reading the backend's cumulative energy counter now, in J (the windows'
        units); None without a counter or after the counter failed (the failure is recorded as
        the edges' is: see the module doc). Cheap (one counter read) and thread-safe."""
        return lambda: self._energy_now(self._clock())

    @property
    def energy_update_period_s(self) -> float | None:
        """Seconds between the energy counter's updates (1 / its rate); None if unknown or no counter."""
        hz = getattr(self.backend, "energy_update_hz", None)
        if not hz or self.backend.energy_source is None:
            return None
        return 1.0 / hz

    @property
    def energy_missing_reason(self) -> str | None:
        """Why there is no energy counter to read, in the windows' words (its failure, or the
        backend's reason); None while a counter works."""
        if self.energy_failure is not None:
            return self.energy_failure.reason
        if self.backend.energy_source is None:
            return getattr(self.backend, "energy_missing_reason", None) or "no energy counter on this host"
        return None

    def _run(self) -> None:
        next_t = self._clock()
        while not self._stop.is_set():
            self.sample_now()
            next_t += self.interval_s
            # Sleep to a fixed schedule so sampling does not drift with read time.
            self._stop.wait(max(0.0, next_t - self._clock()))

    def start(self) -> "Monitor":
        self.describe()  # while the backend works: a later failure must not lose the device's name
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
        return t, self._energy_now(t)

    def mark(self) -> None:
        """A step boundary inside the open windows: sync, sample, read the energy counter."""
        if not self._open:
            raise RuntimeError("mark() needs an open window")
        self._marks.append(self._edge())

    def _cpu_now(self) -> isolation.CpuSnapshot | None:
        try:
            return isolation.cpu_snapshot(self.tree_pid)
        except Exception as exc:  # noqa: BLE001 - an odd /proc must not fail the run
            log.error("could not read the host's CPU time: %s: %s", type(exc).__name__, exc)
            return None

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise RuntimeError(f"window {name!r} is already open")
        cpu = self._cpu_now()  # before the edge, so its cost is not in the window
        self._open[name] = self._edge()
        self._cpu_open[name] = cpu

    def end_window(self, name: str) -> Window:
        if name not in self._open:
            raise RuntimeError(f"window {name!r} was never begun")
        t0, e0 = self._open.pop(name)
        t1, e1 = self._edge()
        cpu0, cpu1 = self._cpu_open.pop(name, None), self._cpu_now()
        series: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        with self._lock:
            for t, d, k, v in self._rows:
                if t0 <= t <= t1:
                    series[k][d].append((t, v))
        window = Window(
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
            marks=[m for m in self._marks if t0 < m[0] < t1],
            energy_update_hz=getattr(self.backend, "energy_update_hz", None),
            read_failure=self.read_failure, energy_failure=self.energy_failure,
            cpu_start=cpu0, cpu_end=cpu1,
        )
        self.last_window = window
        return window

    def foreign_cpu(self, max_cores: float = isolation.FOREIGN_CPU_MAX_CORES) -> dict[str, Any]:
        """:meth:`Window.foreign_cpu` of the window ended last: the record's foreign-load columns
        (missing where the run ended none, e.g. it ran out of memory first)."""
        if self.last_window is None:
            why = "no measured window ended"
            return {"foreign_cpu_s": Figure.missing(why), "foreign_cpu_frac": Figure.missing(why), "foreign_load": None}
        return self.last_window.foreign_cpu(max_cores)

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
        """The device's name, count and driver, read once (the first successful read is kept)."""
        if self._described is None:
            try:
                self._described = self.backend.describe()
            except Exception as exc:  # noqa: BLE001 - the record is still written, without them
                log.error("could not describe the measured device: %s: %s", type(exc).__name__, exc)
                return {}
        return self._described
