"""What the report is built from: the stage manifests (every table, leaderboard and plot an
aggregation wrote, what it skipped and why), the records they name (each figure's source and
noise, each run's status), the run's config, and the document sections other rules hand in
(Markdown with its plots, CSV and JSON). Nothing is found by globbing ``results/``: every file
is named by a manifest or given on the command line (a folder given is read whole)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..aggregate.specs import INFERENCE_LATENCY, SPECS, StageSpec
from ..aggregate.summary import read_manifest
from ..record import STAGES, SchemaError, read_record


@dataclass
class StageInput:
    """One stage's manifest, its folder, its spec and the records it names (one row per run)."""

    manifest: dict[str, Any]
    folder: Path  # the manifest's folder: its relative paths start here
    spec: StageSpec
    records: pd.DataFrame
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (record as listed, why it could not be read)

    @property
    def stage(self) -> str:
        return str(self.manifest["stage"])

    def path(self, rel: str) -> Path:
        return self.folder / rel

    def table_records(self) -> pd.DataFrame:
        """The runs behind the table's rows (inference: the table's load point only)."""
        cells = set(self.manifest.get("cells", []))
        r = self.records
        return r[r["cell"].isin(cells)] if len(r) else r


@dataclass
class Section:
    """A document section: a title and its files (.md rendered, .png/.svg embedded, .csv shown as
    a table, .json shown as text; a folder stands for the plots in it)."""

    title: str
    files: list[Path]

    def expanded(self) -> list[Path]:
        out: list[Path] = []
        for f in self.files:
            if f.is_dir():
                out += sorted(p for p in f.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".svg"))
            else:
                out.append(f)
        return out


@dataclass
class ReportInputs:
    stages: list[StageInput]
    sections: list[Section]
    config: dict[str, Any] | None  # the run's config, validated with its defaults filled
    config_hash: str | None


def spec_for_table(stage: str, rel: str) -> StageSpec | None:
    """The spec that made a table file (by its stem), if one did."""
    stem = Path(rel).stem
    for s in (*SPECS.values(), INFERENCE_LATENCY):
        if s.stage == stage and s.file_stem == stem:
            return s
    return None


def _record_path(rel: str, folder: Path) -> Path:
    """A record path as the manifest names it: relative to the working folder the aggregation ran
    in, which is the results folder's parent when the report runs elsewhere."""
    p = Path(rel)
    if p.is_absolute() or p.exists():
        return p
    return folder.parent / p


def read_records(paths: list[Path]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Every readable record (one row per run) and, for the others, (the file, why)."""
    frames, bad = [], []
    for p in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an older schema is read with its newer columns null
                frames.append(read_record(p).to_pandas())
        except (SchemaError, OSError) as e:
            bad.append((str(p), str(e).removeprefix(f"{p}: ")))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["cell", "status"])), bad


def read_stage(manifest_path: Path | str) -> StageInput:
    m = read_manifest(manifest_path)
    folder = Path(m["_dir"])
    listed = [str(r) for r in m.get("records", [])]
    records, bad = read_records([_record_path(r, folder) for r in listed])
    named = dict(zip((str(_record_path(r, folder)) for r in listed), listed))
    return StageInput(m, folder, SPECS[m["stage"]], records, [(named.get(p, p), why) for p, why in bad])


def collect(manifests: list[Path | str], sections: list[Section] | None = None, config_json: str | None = None,
            config_hash: str | None = None) -> ReportInputs:
    order = {s: i for i, s in enumerate(STAGES)}
    stages = sorted((read_stage(p) for p in manifests), key=lambda s: order.get(s.stage, len(order)))
    config = json.loads(config_json) if config_json else None
    return ReportInputs(stages, list(sections or []), config, config_hash)
