"""Progress lines for long steps: step n of N, throughput, elapsed and time left."""

from __future__ import annotations

import logging
import time


class Progress:
    def __init__(self, total: int, unit: str, logger: logging.Logger, every_s: float = 5.0, start: int = 0) -> None:
        self.total = total
        self.unit = unit
        self.log = logger
        self.every_s = every_s
        self.start_n = start
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, n: int, items: float = 0.0, item_unit: str = "tok", extra: str = "", force: bool = False) -> None:
        """Log at most every ``every_s`` seconds; ``items`` is the running count for the rate."""
        now = time.monotonic()
        if not force and now - self._last < self.every_s and n < self.total:
            return
        self._last = now
        elapsed = now - self.t0
        done = max(n - self.start_n, 0)
        left = (self.total - n) * elapsed / done if done else float("nan")
        rate = f" | {items / elapsed:,.0f} {item_unit}/s" if items and elapsed > 0 else ""
        self.log.info(
            "%s %d of %d (%.0f%%)%s | elapsed %.1fs | left ~%.1fs%s",
            self.unit, n, self.total, 100.0 * n / max(self.total, 1), rate, elapsed, left,
            f" | {extra}" if extra else "",
        )
