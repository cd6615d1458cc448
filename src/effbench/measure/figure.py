"""A measured figure that carries its source, or is missing with a reason (never a silent zero)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    value: float | None
    source: str  # e.g. "nvml_energy_counter", "psutil_rss", "wall_clock", "analytic"
    missing_reason: str | None = None

    def __post_init__(self) -> None:
        if self.value is None:
            if not self.missing_reason:
                raise ValueError("a missing figure needs a reason")
        elif not math.isfinite(self.value):
            raise ValueError(f"figure from {self.source} is not finite: {self.value}")

    @property
    def measured(self) -> bool:
        return self.value is not None

    @classmethod
    def missing(cls, reason: str) -> "Figure":
        return cls(None, "unavailable", reason)

    @classmethod
    def of(cls, value: float, source: str) -> "Figure":
        return cls(float(value), source)

    def derive(self, value_fn, source_suffix: str = "") -> "Figure":  # type: ignore[no-untyped-def]
        """A figure computed from this one; missing stays missing with the same reason."""
        if self.value is None:
            return self
        return Figure.of(value_fn(self.value), self.source + source_suffix)
