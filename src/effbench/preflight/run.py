"""All checks of one config, in table order: environments, references, memory, run time, disk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..config.loaded import Plan, plan
from .device import resolve
from .disk import disk_rows
from .environments import StageProbe, cached_probe, env_rows, stage_probes
from .memory import memory_rows
from .profile import Profile
from .references import add_lookups, reference_rows, references
from .rows import Row, skip
from .runtime import ASSUMED_GPU, ASSUMED_MFU, runtime_rows

CHECKS = ("environment", "reference", "memory", "runtime", "disk")


def expand(config: dict[str, Any]) -> Plan:
    """The plan of a config, like :func:`effbench.config.plan` but reporting memory, and Hugging
    Face ids missing from the cache while offline, instead of refusing them (preflight lists every
    problem at once)."""
    return plan(config, refuse_unfit=False, refuse_uncached=False)


@dataclass
class Options:
    profile: Profile
    results: Path | None = None  # default: the config's `results:`
    mfu: float = ASSUMED_MFU
    gpu: str = ASSUMED_GPU
    checks: tuple[str, ...] = CHECKS
    probe: Callable[[StageProbe], None] = cached_probe  # how a stage's interpreter is asked


def preflight(config: dict[str, Any], opts: Options, log: Callable[[str], None] = lambda s: None) -> list[Row]:
    plan = expand(config)
    probes = stage_probes(plan) if {"environment", "reference"} & set(opts.checks) else {}
    refs = references(plan)
    add_lookups(refs, probes)
    for p in probes.values():
        log(f"probing the {p.stage} environment ({p.python}) ...")
    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:  # subprocesses: they overlap
        list(pool.map(opts.probe, probes.values()))
    rows: list[Row] = []
    if "environment" in opts.checks:
        rows += env_rows(plan, probes)
    ref_rows, resolved = reference_rows(plan, refs, probes)
    if "reference" in opts.checks:
        rows += ref_rows
    device = resolve(plan.config) if {"memory", "runtime"} & set(opts.checks) else None
    if device is not None and device.config is not plan.config:
        plan = replace(plan, config=device.config)  # auto on a GPU: checked against that GPU
    if "memory" in opts.checks:
        assert device is not None
        rows += memory_rows(plan, resolved, opts.profile, device)
    if "runtime" in opts.checks:
        assert device is not None
        if device.kind == "cpu":
            rows.append(skip("runtime", "all", (device.note or "device is cpu")
                             + ": the embedded default's local run, not a cluster campaign"))
        else:
            results = opts.results or Path(plan.config["results"])
            rows += runtime_rows(plan, resolved, opts.profile, results, opts.mfu, opts.gpu)
    if "disk" in opts.checks:
        rows += disk_rows(plan, resolved, opts.results)
    return rows
