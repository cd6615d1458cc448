"""A measured figure that carries its source, or is missing with a reason (never a silent zero).

A figure may carry its noise: a 95 % interval (see :mod:`.spread`), recorded as
``X__ci_low``, ``X__ci_high``, ``X__ci_n`` and ``X__ci_method``. A missing figure has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
