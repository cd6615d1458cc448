"""The per-cell frames the decisions read: the aggregation's own rows, rebuilt from the records.

Each stage's rows come from :mod:`effbench.aggregate` exactly as its tables do (repeats collapsed,
intervals kept); serving rows get accuracy and MCR joined from the evaluation scores and quantize
records (:func:`effbench.aggregate.serving.attach_quality`), at every load point, and the fidelity
figures and verdict (``fid_verdict``: pass | fail | baseline) from the fidelity.json files. Two joins make
the cross-axis views possible, both read from the records' resolved settings:

- a fine-tuning row's ``pretrained`` is the pretraining cell its model came from (``model_source``);
- a serving row's ``pretrained``, ``pretrain_size``, ``pretrain_technique`` come from its quantize
  record's ``source``; ``variant`` is "<technique> × <precision>" (or the model's name when it was
  not pretrained here).

The pipeline names every record file (:func:`load_frames`); ``effbench recommend`` finds them in
the stage manifests the aggregation wrote (:func:`frames_from_results`). Bad records are left out
and listed, as with ``aggregate.skip_bad_records``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..aggregate.frame import LeftOut, is_missing, load_frame, path_cell, read_stage_records, skipping_bad_records
from ..aggregate.frame import stage_rows
from ..aggregate.serving import attach_fidelity, attach_quality, load_scores
from ..fidelity.table import load_fidelity
from ..aggregate.specs import FINETUNE, INFERENCE_LATENCY, PRETRAIN
from ..record import RECORD_FILE

STAGES = ("pretrain", "finetune", "quantize", "inference")


@dataclass
class Frames:
    pretrain: pd.DataFrame
    finetune: pd.DataFrame
    inference: pd.DataFrame  # every load point, quality and pretraining source joined
    results: Path
    baseline: str | None = None
    table_load_point: str | None = None
    left_out: list[LeftOut] = field(default_factory=list)

    def record_path(self, stage: str, cell: str) -> str:
        return str(self.results / stage / cell / RECORD_FILE)


def _settings(row: pd.Series) -> dict:
    raw = row.get("settings_json")
    try:
        return json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}


def _pretrained_of_finetune(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["pretrained"] = [(_settings(r).get("model_source") or {}).get("pretrained") for _, r in df.iterrows()]
    return df


def _serving_sources(quant: pd.DataFrame) -> dict[str, str]:
    """model -> the pretraining cell it was exported from (models pretrained here only)."""
    out = {}
    for _, r in quant.iterrows():
        src = _settings(r).get("source") or {}
        if src.get("kind") == "pretrained":
            out[str(r["model"])] = str(src["ref"])
    return out


def join_pretraining(df: pd.DataFrame, sources: dict[str, str]) -> pd.DataFrame:
    """Serving rows with the pretraining cell, size and technique of their model, and ``variant``."""
    df = df.copy()
    refs = [sources.get(str(m)) for m in df["model"]] if len(df) else []
    df["pretrained"] = refs
    df["pretrain_size"] = [r.split("/")[0] if r else None for r in refs]
    df["pretrain_technique"] = [r.split("/")[1] if r else None for r in refs]
    df["variant"] = [f"{r.split('/')[1]} × {p}" if r else f"{m} × {p}"
                     for r, m, p in zip(refs, df["model"], df["precision"])] if len(df) else []
    return df


def load_frames(pretrain: Sequence[Path], finetune: Sequence[Path], quantize: Sequence[Path],
                inference: Sequence[Path], scores: Sequence[Path], results: Path, baseline: str | None,
                table_load_point: str | None, fidelity: Sequence[Path] = ()) -> Frames:
    """The frames from the named record files (none of a stage: an empty frame) and the named
    fidelity.json files."""
    results = Path(results)
    with skipping_bad_records() as left_out:
        pre = load_frame(pretrain, PRETRAIN)
        ft = _pretrained_of_finetune(load_frame(finetune, FINETUNE))
        quant = read_stage_records(quantize, "quantize")
        raw = read_stage_records(inference, "inference")
        if len(raw) and baseline:
            fid = load_fidelity(fidelity)
            # the verdict too (pass | fail | baseline): recommend leaves a failing precision out
            raw = attach_fidelity(attach_quality(raw, quant, load_scores(scores), baseline), fid)  # with the verdict
        inf = join_pretraining(stage_rows(raw, INFERENCE_LATENCY), _serving_sources(quant))
        return Frames(pre, ft, inf, results, baseline, table_load_point, list(left_out))


def manifest_records(results: Path, stage: str) -> list[Path]:
    """The record files a stage's aggregation read, re-rooted under ``results`` (a manifest keeps
    the paths as given, relative to where the pipeline ran)."""
    path = Path(results) / f"{stage}.manifest.json"
    if not path.is_file():
        return []
    listed = json.loads(path.read_text()).get("records", [])
    return [Path(results) / path_cell(Path(p)) / RECORD_FILE for p in listed]


def score_files(results: Path, quantize: Iterable[Path]) -> list[Path]:
    """Each quantized model × precision's evaluation scores, where the eval stage wrote them."""
    out = []
    for q in quantize:
        model, precision = q.parent.parent.name, q.parent.name
        s = Path(results) / "eval" / model / precision / "scores.json"
        if s.is_file():
            out.append(s)
    return out


def frames_from_results(results: Path, baseline: str | None, table_load_point: str | None) -> Frames:
    """The frames of a finished run: the records its stage manifests list (missing files are
    left out and listed)."""
    results = Path(results)
    lists = {s: manifest_records(results, s) for s in STAGES}
    gone = [p for ps in lists.values() for p in ps if not p.is_file()]
    lists = {s: [p for p in ps if p.is_file()] for s, ps in lists.items()}
    frames = load_frames(lists["pretrain"], lists["finetune"], lists["quantize"], lists["inference"],
                         score_files(results, lists["quantize"]), results, baseline, table_load_point,
                         sorted(results.glob("fidelity/*/*/fidelity.json")))
    frames.left_out += [LeftOut(str(p), path_cell(p), "listed in a manifest but no longer on disk") for p in gone]
    return frames


def has_manifests(results: Path) -> bool:
    return any((Path(results) / f"{s}.manifest.json").is_file() for s in STAGES)


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if len(df) else df


def distinct(values: Iterable[object]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if not is_missing(v)))
