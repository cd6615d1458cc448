"""Waiting in tests without depending on the machine's speed: poll a condition up to a generous
bound (a loaded, shared 2-core host can be many times slower than an idle one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

WAIT_S = 30.0


def poll(condition: Callable[[], bool], within_s: float = WAIT_S, every_s: float = 0.1) -> bool:
    """Whether ``condition`` held at some point within ``within_s`` seconds (checked every ``every_s``)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (an unreaped zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
