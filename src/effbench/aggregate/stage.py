"""Aggregate one stage: tables, leaderboard, Pareto plots, and a manifest of what was written.

The manifest ``<out>/<stage>.manifest.json`` lists every output (paths relative to the
manifest's folder), every output that was skipped and why, the bad records left out on
request (``left_out``), and the provenance of the records; :mod:`.summary` builds the summary
page from manifests alone. The outputs are published all at once (:mod:`.publish`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import write_text
from .frame import is_missing, left_out_so_far, read_stage_records, skipping_bad_records, stage_rows
from .leaderboard import write_leaderboard
from .pareto import write_pareto_plots
from .publish import previous_outputs, staged
from .specs import StageSpec, get_spec
from .tables import build_table, write_tables

MANIFEST_VERSION = 2  # 2 added outputs and left_out


def manifest_path(out: Path, stage: str) -> Path:
    return Path(out) / f"{stage}.manifest.json"


def provenance(raw: pd.DataFrame) -> dict[str, Any]:
    """Distinct hosts, devices, code versions, config hashes, and the time span of the runs."""

    def distinct(col: str) -> list[str]:
        return sorted({str(v) for v in raw[col] if not is_missing(v)}) if len(raw) else []

    devices = set()
    for _, r in raw.iterrows():
        count = "" if is_missing(r["device_count"]) else f" ×{int(r['device_count'])}"
        devices.add(f"{r['device_name']} ({r['device_kind']}){count}")
    started = [t for t in raw["started_at"] if not is_missing(t)] if len(raw) else []
    ended = [t for t in raw["ended_at"] if not is_missing(t)] if len(raw) else []
    return {
        "runs": len(raw),
        "statuses": {str(k): int(v) for k, v in raw["status"].value_counts().items()} if len(raw) else {},
        "hosts": distinct("host"),
        "devices": sorted(devices),
        "drivers": distinct("driver_version"),
        "code_versions": distinct("code_version"),
        "config_hashes": distinct("config_hash"),
        "slurm_jobs": distinct("slurm_job_id"),
        "started_first": min(started).isoformat() if started else None,
        "ended_last": max(ended).isoformat() if ended else None,
    }


def aggregate_stage(
    stage: str,
    records: Iterable[Path | str],
    out: Path | str,
    spec: StageSpec | None = None,
    enrich: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    skip_bad_records: bool = False,
) -> dict[str, Any]:
    """Write a stage's tables, leaderboard and plots under ``out`` and return its manifest.

    ``records`` are the record.parquet files to read, named explicitly. ``enrich`` may
    select runs and add columns joined from other files before rows are collapsed. A bad
    record fails the aggregation, unless ``skip_bad_records`` (or an enclosing
    :func:`.frame.skipping_bad_records`): then it is left out and listed under the table and in
    the manifest. Either every output is written or none is (the previous ones stay).
    """
    spec = spec or get_spec(stage)
    if spec.stage != stage:
        raise ValueError(f"spec is for stage {spec.stage!r}, not {stage!r}")
    out = Path(out)
    with ExitStack() as stack:
        if skip_bad_records:
            stack.enter_context(skipping_bad_records())
        with staged(out, stage) as staging:
            manifest = _write_stage(stage, [Path(p) for p in records], staging, spec, enrich)
    manifest["outputs"] = previous_outputs(manifest_path(out, stage))
    return manifest


def _write_stage(
    stage: str,
    records: list[Path],
    out: Path,
    spec: StageSpec,
    enrich: Callable[[pd.DataFrame], pd.DataFrame] | None,
) -> dict[str, Any]:
    raw = read_stage_records(records, stage)
    left_out = left_out_so_far()  # this stage's and any read before it (inference: quantize records)
    if left_out:
        spec = replace(spec, notes=(*spec.notes, *(x.note() for x in left_out)))
    if enrich is not None:
        raw = enrich(raw)
    df = stage_rows(raw, spec)
    tables = write_tables(df, spec, out)
    table = build_table(df, spec)
    leaderboard, board = write_leaderboard(df, spec, out)
    plots, skipped = write_pareto_plots(df, spec, out)
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "stage": stage,
        "title": spec.title,
        "records": [str(p) for p in records],
        "rows": len(df),
        "cells": [str(c) for c in df["cell"]] if len(df) else [],
        "tables": tables,
        "leaderboard": leaderboard,
        "leaderboard_groups": [
            {"group": g.label, "metrics_used": g.used, "metrics_excluded": g.excluded, "note": g.note}
            for g in board.groups
        ],
        "plots": plots,
        "skipped": skipped,
        "left_out": [asdict(x) for x in left_out],
        "missing_reasons": table.notes,
        "status_notes": table.status_notes,
        "provenance": provenance(raw),
    }
    write_text(manifest_path(out, stage), json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest
