"""A measured window of the monitor (:class:`effbench.measure.monitor.Monitor`): its samples,
marks and energy-counter edges, and the figures computed from them (AMU, PCU, AEC, energy, peak
memory; intervals over sub-windows; energy flags; foreign CPU). See the monitor's module doc."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import isolation
from . import formulas, spread
from .figure import Figure

# A window needs this many energy-counter updates for its energy to be trusted: the counter
# is quantised in time, so with fewer the edges' rounding is more than ~5 % of the window.
MIN_ENERGY_UPDATES = 20

Mark = tuple[float, float | None]  # (monotonic time, energy counter in J or None)


ENERGY_FLAGS = ("energy_counter_updates", "energy_window_short")  # the record columns of Window.energy_flags()
FOREIGN_COLUMNS = ("foreign_cpu_s", "foreign_cpu_frac", "foreign_load")  # the record columns of Window.foreign_cpu()
FOREIGN_SOURCE = "proc_stat_busy-job_tree_cpu"


@dataclass(frozen=True)
class SourceFailure:
    """The first failure of one of the backend's sources: readings after ``t`` are missing."""

    t: float  # monotonic seconds
    what: str  # "readings" (memory, utilisation, power) or "energy counter"
    reason: str  # e.g. "nvml readings failed 12.3 s into the run (2026-...Z): NVMLError_GpuIsLost: ..."

    def hits(self, t1: float) -> bool:
        """Whether a window ending at ``t1`` lost readings to this failure."""
        return self.t <= t1


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
    marks: list[Mark] = field(default_factory=list)  # inside (t0, t1), in time order
    energy_update_hz: float | None = None  # how often the backend's energy counter updates
    steps: int | None = None  # marked steps in this window (a sub-window's share of them)
    read_failure: SourceFailure | None = None  # memory/utilisation/power stopped (see SourceFailure)
    energy_failure: SourceFailure | None = None  # the energy counter stopped
    cpu_start: isolation.CpuSnapshot | None = None  # host and job CPU time just before t0 ...
    cpu_end: isolation.CpuSnapshot | None = None  # ... and just after t1 (None: no /proc)

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    def foreign_cpu(self, max_cores: float = isolation.FOREIGN_CPU_MAX_CORES) -> dict[str, Any]:
        """The record's foreign-load columns: ``foreign_cpu_s``, the CPU-seconds the host's CPUs
        were busy outside the job's process tree during the window (other processes, interrupts,
        hypervisor steal); ``foreign_cpu_frac``, that over the window's core-seconds (seconds ×
        the host's CPUs); ``foreign_load``, true when it averaged more than ``max_cores`` cores
        (and at least ``isolation.FOREIGN_CPU_MIN_S``)."""
        a, b = self.cpu_start, self.cpu_end
        if a is None or b is None:
            why = "no /proc on this host: the CPU time of other processes was not measured"
            return {"foreign_cpu_s": Figure.missing(why), "foreign_cpu_frac": Figure.missing(why), "foreign_load": None}
        secs = max(b.t - a.t, 1e-9)
        # The two counters are kept differently (ticks per CPU vs per process): never below 0.
        foreign = round(max(0.0, (b.host_busy_s - a.host_busy_s) - (b.tree_s - a.tree_s)), 6)
        return {
            "foreign_cpu_s": Figure.of(foreign, FOREIGN_SOURCE),
            "foreign_cpu_frac": Figure.of(min(1.0, foreign / (secs * b.cpus)), FOREIGN_SOURCE + "/(window_s*cpus)"),
            "foreign_load": foreign > max(max_cores * secs, isolation.FOREIGN_CPU_MIN_S),
        }

    def energy_flags(self) -> dict[str, object]:
        """``energy_counter_updates`` (counter updates expected in the window, None when the
        rate is unknown) and ``energy_window_short`` (fewer than MIN_ENERGY_UPDATES)."""
        if self.energy_update_hz is None or self.energy_start_j is None or self._failed(self.energy_failure):
            return {"energy_counter_updates": None, "energy_window_short": None}
        updates = self.seconds * self.energy_update_hz
        return {"energy_counter_updates": updates, "energy_window_short": updates < MIN_ENERGY_UPDATES}

    def _span(self, a: Mark, b: Mark, steps: int | None, reason: str | None) -> "Window":
        """The sub-window between two edges (marks), with the samples inside it."""
        series = {
            k: {d: [(t, v) for t, v in pts if a[0] <= t <= b[0]] for d, pts in per.items()}
            for k, per in self.series.items()
        }
        return Window(
            name=self.name, t0=a[0], t1=b[0], energy_start_j=a[1], energy_end_j=b[1],
            energy_source=self.energy_source, energy_missing_reason=reason or self.energy_missing_reason,
            mem_source=self.mem_source, util_source=self.util_source, series=series,
            marks=[m for m in self.marks if a[0] < m[0] < b[0]], energy_update_hz=self.energy_update_hz, steps=steps,
            read_failure=self.read_failure, energy_failure=self.energy_failure,
        )

    def sub_windows(self, k: int) -> list["Window"]:
        """k consecutive sub-windows: of n marked steps cut at round(i·n/k), i = 0…k (⌊n/k⌋ or ⌈n/k⌉
        steps each, none dropped) when the window has marks (needs n >= k), else of equal time
        (then without energy)."""
        if k < 2:
            raise ValueError("need k >= 2 sub-windows")
        edges: list[Mark] = [(self.t0, self.energy_start_j), *self.marks, (self.t1, self.energy_end_j)]
        if self.marks:
            n = len(edges) - 1  # marked steps (the last runs from the last mark to t1)
            if n < k:
                raise ValueError(f"{n} marked steps cannot fill {k} sub-windows")
            cut = [round(i * n / k) for i in range(k + 1)]
            return [self._span(edges[cut[i]], edges[cut[i + 1]], cut[i + 1] - cut[i], None) for i in range(k)]
        why = "no marks in the window: energy per sub-window needs the counter read inside it"
        ts = [self.t0 + i * self.seconds / k for i in range(k + 1)]
        return [self._span((ts[i], None), (ts[i + 1], None), None, why) for i in range(k)]

    def spread_figures(self, k: int) -> dict[str, Figure]:
        """:meth:`figures` with 95 % intervals from k sub-windows (batch means).

        AMU, PCU and AEC are time averages, so the whole window's value is Σ ∫_i / Σ T_i over
        the sub-windows (of unequal length); its interval is the ratio estimator's
        (:func:`spread.ratio_interval`), labelled ``ratio_batch_means_k=<k>``. Energy's interval
        is AEC's times the window length. The peak has none (a max, not a mean).
        """
        out = self.figures()
        subs = self.sub_windows(k)
        secs = [w.seconds for w in subs]
        method = spread.ratio_batch_means_method(k)
        per_sub = [w.figures() for w in subs]
        for key in ("amu_gb", "amu_frac", "pcu_frac", "aec_w"):
            vals = [f[key].value for f in per_sub]
            if out[key].value is None or any(v is None for v in vals):
                continue
            _, iv = spread.ratio_interval([v * t for v, t in zip(vals, secs)], secs, method)  # type: ignore[operator]
            out[key] = out[key].with_interval(iv)
        aec = out["aec_w"]
        if aec.interval is not None and out["energy_j"].value is not None:
            iv = aec.interval
            out["energy_j"] = out["energy_j"].with_interval(
                spread.Interval(iv.low * self.seconds, iv.high * self.seconds, iv.n, iv.method))
        return out

    def _per_device(self, key: str) -> dict[int, tuple[list[float], list[float]]]:
        return {d: ([t for t, _ in pts], [v for _, v in pts]) for d, pts in self.series.get(key, {}).items() if pts}

    def _failed(self, failure: SourceFailure | None) -> str | None:
        return failure.reason if failure is not None and failure.hits(self.t1) else None

    def energy(self) -> Figure:
        failed = self._failed(self.energy_failure)
        if failed:
            return Figure.missing(failed)
        if self.energy_start_j is not None and self.energy_end_j is not None:
            return Figure.of(self.energy_end_j - self.energy_start_j, self.energy_source or "counter")
        power = self._per_device("power_w")
        if power and self._failed(self.read_failure):  # the polled power stopped partway
            return Figure.missing(self._failed(self.read_failure))  # type: ignore[arg-type]
        if power:  # a GPU without an energy counter: integrate polled power (under-samples bursts)
            total = sum(formulas.energy_from_power(ts, vs, self.t0, self.t1) for ts, vs in power.values())
            return Figure.of(total, "nvml_power_poll")
        return Figure.missing(self.energy_missing_reason or "no energy counter on this host")

    def figures(self) -> dict[str, Figure]:
        """AMU (GB, fraction), peak memory, PCU, energy and AEC over this window.

        Memory and utilisation are averaged over devices (the per-device load a user sizes
        hardware by); energy is summed over devices (what the node draws).
        """
        failed = self._failed(self.read_failure)
        if failed:  # a truncated series would bias every time average: none is reported
            out = {k: Figure.missing(failed) for k in ("amu_gb", "peak_mem_gb", "amu_frac", "pcu_frac")}
        else:
            out = self._memory_and_utilisation()
        energy = self.energy()
        out["energy_j"] = energy
        out["aec_w"] = energy.derive(lambda e: formulas.average_power_w(e, self.seconds), "/window")
        return out

    def _memory_and_utilisation(self) -> dict[str, Figure]:
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
        return out
