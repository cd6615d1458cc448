"""A measured figure that carries its source, or is missing with a reason (never a silent zero).

A figure may carry its noise: a 95 % interval (see :mod:`.spread`), recorded as
``X__ci_low``, ``X__ci_high``, ``X__ci_n`` and ``X__ci_method``. A missing figure has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from . import spread
from .spread import Interval


@dataclass(frozen=True)
class Figure:
    value: float | None
    source: str  # e.g. "nvml_energy_counter", "psutil_rss", "wall_clock", "analytic"
    missing_reason: str | None = None
    interval: Interval | None = None  # its 95 % interval, when its noise was measured

    def __post_init__(self) -> None:
        if self.value is None:
            if not self.missing_reason:
                raise ValueError("a missing figure needs a reason")
            if self.interval is not None:
                raise ValueError("a missing figure has no interval")
        elif not math.isfinite(self.value):
            raise ValueError(f"figure from {self.source} is not finite: {self.value}")

    @property
    def measured(self) -> bool:
        return self.value is not None

    @classmethod
    def missing(cls, reason: str) -> "Figure":
        return cls(None, "unavailable", reason)

    @classmethod
    def of(cls, value: float, source: str, interval: Interval | None = None) -> "Figure":
        return cls(float(value), source, None, interval)

    @classmethod
    def over_replicates(cls, values: Sequence[float], source: str, method: str = "t_repeats") -> "Figure":
        """The mean of independent replicates (serving repeats, batch means) with its t interval;
        one replicate gives the value without an interval, none a missing figure."""
        if not values:
            return cls.missing("no replicates were measured")
        if len(values) == 1:
            return cls.of(values[0], source)
        mean, iv = spread.mean_interval(values, method)
        return cls.of(mean, source, iv)

    @classmethod
    def batch_means(cls, per_step: Sequence[float], k: int, source: str) -> "Figure":
        """The mean of a per-step series (e.g. step times for AL) with a k-batch-means interval;
        fewer than k steps give the mean without an interval."""
        if not per_step:
            return cls.missing("no steps were measured")
        if len(per_step) < k:
            return cls.of(sum(per_step) / len(per_step), source)
        _, iv = spread.batch_means_interval(per_step, k)
        mean = sum(per_step) / len(per_step)  # all steps; the batches drop the len % k earliest
        return cls.of(mean, source, Interval(mean - iv.half_width, mean + iv.half_width, iv.n, iv.method))

    @classmethod
    def rate(cls, numerators: Sequence[float], denominators: Sequence[float], source: str, method: str) -> "Figure":
        """Σx / Σy over sub-windows (tokens/s, J/token) with the ratio estimator's interval."""
        if len(numerators) < 2:
            total = sum(denominators)
            return cls.of(sum(numerators) / total, source) if total > 0 else cls.missing("nothing was counted")
        value, iv = spread.ratio_interval(numerators, denominators, method)
        return cls.of(value, source, iv)

    def with_interval(self, interval: Interval | None) -> "Figure":
        return self if self.value is None else replace(self, interval=interval)

    def derive(self, value_fn, source_suffix: str = "") -> "Figure":  # type: ignore[no-untyped-def]
        """A figure computed from this one; missing stays missing with the same reason.

        A monotone value_fn (a scale by a constant, the only use) maps the interval's ends too.
        """
        if self.value is None:
            return self
        iv = self.interval
        if iv is not None:
            lo, hi = sorted((value_fn(iv.low), value_fn(iv.high)))
            iv = Interval(lo, hi, iv.n, iv.method)
        return Figure.of(value_fn(self.value), self.source + source_suffix, iv)

    def columns(self, name: str) -> dict[str, object]:
        """The record columns of this figure under ``name``."""
        iv = self.interval
        return {
            name: self.value,
            name + "__source": self.source,
            name + "__missing": self.missing_reason,
            name + "__ci_low": iv.low if iv else None,
            name + "__ci_high": iv.high if iv else None,
            name + "__ci_n": iv.n if iv else None,
            name + "__ci_method": iv.method if iv else None,
        }
