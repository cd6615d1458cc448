"""Serving load points: closed loop (offline, a fixed concurrency) and open loop (a request rate,
optionally swept), resolved and checked before any job starts.

A rate point's sweep adds points at ``steps`` rates from ``sweep.from`` to ``sweep.to``
(geometric or linear), named ``<point>@<rate>`` (the rate as the shortest decimal that names it);
the point itself stays at its own ``rate`` (the one the tables report when it is the
``table_load_point``). A sweep rate equal to the point's own is not repeated. Each point's
settings say which base point it came from (``sweep_of``).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError


def is_open_loop(point: dict[str, Any]) -> bool:
    return point["mode"] == "rate"


def rate_name(rate: float) -> str:
    """The shortest decimal of ``rate`` up to 4 significant digits: 2.0 -> "2", 0.5 -> "0.5"."""
    return f"{rate:.4g}"


def sweep_rates(key: str, sweep: dict[str, Any]) -> list[float]:
    lo, hi, n = float(sweep["from"]), float(sweep["to"]), int(sweep["steps"])
    if lo <= 0:
        raise ConfigError(f"config key `{key}.from`: {lo:g} requests/s; a rate must be above 0")
    if hi < lo:
        raise ConfigError(f"config key `{key}.to`: {hi:g} is below sweep.from {lo:g} (a sweep goes up from `from` "
                          "to `to`)")
    if sweep["spacing"] == "geometric":
        return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _slo(key: str, lp: dict[str, Any]) -> None:
    for k, v in (lp.get("slo") or {}).items():
        if v <= 0:
            raise ConfigError(f"config key `{key}.slo.{k}`: {v:g} ms; an SLO must be above 0 (no request meets 0 ms)")


def _closed(key: str, lp: dict[str, Any]) -> dict[str, Any]:
    for k in ("rate", "arrivals", "duration_s", "sweep"):
        if k in lp and not (k == "arrivals" and lp[k] == "poisson"):  # arrivals has a schema default
            raise ConfigError(f"config key `{key}.{k}`: only an open-loop point (mode: rate) takes it")
    lp = {k: v for k, v in lp.items() if k != "arrivals"}
    if lp["mode"] == "offline":
        if "concurrency" in lp:
            raise ConfigError(f"config key `{key}.concurrency`: an offline load point submits every request at "
                              "once (the engine batches up to inference.vllm.max_num_seqs); use mode: concurrency")
        lp["concurrency"] = lp["requests"]
    elif lp["concurrency"] > lp["requests"]:
        raise ConfigError(f"config key `{key}.concurrency`: {lp['concurrency']} is more than requests "
                          f"({lp['requests']})")
    return lp


def _open(key: str, lp: dict[str, Any], rate: float) -> dict[str, Any]:
    lp = {k: v for k, v in lp.items() if k != "sweep"}
    lp["rate"] = rate
    if ("requests" in lp) == ("duration_s" in lp):
        raise ConfigError(f"config key `{key}`: an open-loop point takes requests or duration_s (one of them)")
    if "duration_s" in lp:
        if lp["duration_s"] <= 0:
            raise ConfigError(f"config key `{key}.duration_s`: {lp['duration_s']:g}; it must be above 0")
        lp["requests"] = max(1, math.ceil(rate * lp.pop("duration_s")))
    lp["concurrency"] = min(lp.get("concurrency", lp["requests"]), lp["requests"])  # the cap on requests in flight
    return lp


def expand_load_points(points: dict[str, dict[str, Any]], repeats: int) -> dict[str, dict[str, Any]]:
    """Every load point's resolved settings, sweeps expanded after their base point, each with its
    ``repeats``. ConfigError names the key: a rate of 0 or below, an SLO of 0 or below, a sweep
    whose upper rate is below its lower, a closed-loop point with open-loop keys."""
    out: dict[str, dict[str, Any]] = {}
    for name, given in points.items():
        key = f"inference.load_points.{name}"
        lp = dict(given)
        lp.setdefault("repeats", repeats)
        _slo(key, lp)
        if not is_open_loop(lp):
            out[name] = _closed(key, lp)
            continue
        if lp["rate"] <= 0:
            raise ConfigError(f"config key `{key}.rate`: {lp['rate']:g} requests/s; a rate must be above 0")
        out[name] = {**_open(key, lp, float(lp["rate"])), "sweep_of": name}
        for r in sweep_rates(f"{key}.sweep", lp["sweep"]) if lp.get("sweep") else []:
            swept = f"{name}@{rate_name(r)}"
            if rate_name(r) == rate_name(float(lp["rate"])) or swept in out:
                continue
            out[swept] = {**_open(key, lp, float(rate_name(r))), "sweep_of": name}
    return out
