"""Predicted run time per cell against the Slurm profile's ``runtime`` of its rule.

Rate, in order: a measured record of the same shape under ``results:`` (its ``tokens_per_s``;
same shape = the settings that set the step's cost, :func:`shape_key`), else FLOPs at an
assumed MFU of the devices' dense peak (``measure.peak_flops.<dtype>`` where stated, else the
datasheet of ``ASSUMED_GPU``).

- pretraining: tokens = train_steps × global_batch_size × seq_length; FLOPs per token are the
  stage's own (``effbench.plan.params.flops_per_token``: 6·N_active + attention);
- fine-tuning: samples = max_steps × batch × accumulation × GPUs, or epochs × the rows of the
  dataset's cached files × (1 − val_size) (``max_samples`` caps it); tokens ≤ samples ×
  cutoff_len (an upper bound: samples are shorter); FLOPs per token 8·N for full fine-tuning
  and 6·N otherwise (LlamaFactory turns gradient checkpointing on, so the forward runs twice;
  frozen weights get no weight gradients);
- quantization, evaluation and serving are not predicted (one row says so).

A stage that resumes after a kill (pretraining always; fine-tuning with
``finetune.training.checkpoint_interval``) may use ``1 + retries`` submissions of the profile.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..config.memory import vocab_size
from ..config.loaded import Plan
from ..measure.peaks import peak_flops
from ..plan.params import flops_per_token
from .profile import Profile
from .references import Resolved
from .rows import Row, ok, problem, skip
from .shapes import from_hf_config, from_settings

CHECK = "runtime"
ASSUMED_MFU = 0.25  # pretraining measured 25.8 % on one H200 with the SDPA swap (toolchain notes)
ASSUMED_GPU = "GH200"  # the profile's partitions
STAGE_RULE = {"pretrain": "pretrain", "finetune": "finetune"}


def shape_key(stage: str, settings: dict[str, Any]) -> str:
    """What sets the cost of a step: a measured rate transfers only between equal keys."""
    t = settings["training"]
    if stage == "pretrain":
        key = [settings["model"], t["micro_batch_size"], t["precision"], settings.get("parallel"), settings["device"]]
    else:
        key = [settings["model_source"], settings["method_settings"], t["per_device_train_batch_size"],
               t["cutoff_len"], t["precision"], settings.get("parallel"), settings["device"]]
    return json.dumps(key, sort_keys=True, default=str)


def measured_rates(results: Path, stage: str) -> dict[str, tuple[float, str]]:
    """{shape key: (tokens/s, record path)} from the finished records under ``results/<stage>/``."""
    import pyarrow.parquet as pq

    out: dict[str, tuple[float, str]] = {}
    for path in sorted((results / stage).rglob("record.parquet")):
        try:
            t = pq.read_table(path, columns=["status", "settings_json", "tokens_per_s"]).to_pylist()[0]
        except Exception:  # noqa: BLE001 - an unreadable record is simply not a measurement here
            continue
        if t["status"] == "ok" and t["tokens_per_s"]:
            out[shape_key(stage, json.loads(t["settings_json"]))] = (float(t["tokens_per_s"]), str(path))
    return out


def _peak(config: dict[str, Any], precision: str, gpu: str) -> tuple[float | None, str]:
    dtype = "bf16" if precision == "bf16" else "fp32"
    stated = ((config.get("measure") or {}).get("peak_flops") or {}).get(dtype)
    if stated:
        return float(stated), f"measure.peak_flops.{dtype}"
    return peak_flops(gpu, dtype)


def count_rows(files: list[str]) -> int | None:
    """Rows of a dataset's data files (parquet footers, JSON lines, JSON arrays); None if unreadable."""
    n = 0
    for f in files:
        try:
            if f.endswith(".parquet"):
                import pyarrow.parquet as pq

                n += pq.ParquetFile(f).metadata.num_rows
            elif f.endswith(".jsonl"):
                with open(f, "rb") as fh:
                    n += sum(1 for line in fh if line.strip())
            elif f.endswith(".json"):
                data = json.loads(Path(f).read_text())
                n += len(data) if isinstance(data, list) else 0
            else:
                return None
        except (OSError, ValueError, ImportError):
            return None
    return n


def _gpus(settings: dict[str, Any]) -> int:
    par = settings.get("parallel") or {}
    if isinstance(par, int):
        return par
    return int(par.get("gpus", 1)) * int(par.get("nodes", 1)) if "gpus" in par else \
        int(par.get("gpus_per_node", 1)) * int(par.get("nodes", 1))


def _verdict(cell: str, seconds: float, basis: str, rule: str, profile: Profile, resumes: bool) -> Row:
    limit = profile.runtime_min(rule)
    hours = seconds / 3600
    if limit is None:
        return skip(CHECK, cell, f"predicted {hours:.1f} h ({basis}); the profile gives no numeric runtime for {rule}")
    tries = 1 + profile.retries if resumes else 1
    head = f"predicted {hours:.1f} h ({basis}); runtime {limit / 60:g} h" + (f" × {tries} submissions" if tries > 1 else "")
    if seconds > limit * 60 * tries:
        return problem(CHECK, cell, head + f": needs {math.ceil(seconds / (limit * 60))} submissions",
                       f"{profile.key(rule, 'runtime')} (or fewer steps / samples in the config)")
    return ok(CHECK, cell, head)


def pretrain_rows(plan: Plan, profile: Profile, results: Path, mfu: float, gpu: str) -> list[Row]:
    rows: list[Row] = []
    vocab, where = vocab_size(plan.config)
    rates = measured_rates(results, "pretrain") if plan.pretrain else {}
    for c in plan.pretrain:
        s, cell = c.settings, f"pretrain {c.name}"
        t = s["training"]
        tokens = int(t["train_steps"]) * int(t["global_batch_size"]) * int(s["model"]["seq_length"])
        hit = rates.get(shape_key("pretrain", s))
        if hit:
            rows.append(_verdict(cell, tokens / hit[0], f"measured {hit[0]:,.0f} tokens/s in {hit[1]}", "pretrain",
                                 profile, resumes=True))
            continue
        peak, source = _peak(plan.config, t["precision"], gpu)
        if peak is None or vocab is None:
            rows.append(skip(CHECK, cell, f"not predicted: {source if peak is None else where}"))
            continue
        par = s.get("parallel") or {}
        devices = int(par.get("nodes", 1)) * int(par.get("gpus_per_node", 1))
        flops = flops_per_token(s["model"], int(s["model"]["seq_length"]), vocab) * tokens
        rows.append(_verdict(cell, flops / (mfu * peak * devices),
                             f"{flops:.2e} FLOPs at MFU {mfu:g} of {devices} × {peak / 1e12:g} TFLOP/s ({source})",
                             "pretrain", profile, resumes=True))
    return rows


def _finetune_params(plan: Plan, cell: Any, resolved: Resolved) -> int | str:
    if cell.source.kind == "pretrained":
        vocab, where = vocab_size(plan.config)
        return from_settings(cell.source.export.settings["model"], vocab).total if vocab else where
    cfg = resolved.model_config.get(f"finetune.models.{cell.model}")
    if cfg is None:
        return "the model's config.json is not available (see its reference row)"
    try:
        return from_hf_config(cfg).total
    except (KeyError, ValueError) as e:
        return f"config.json not understood ({e})"


def _samples(plan: Plan, cell: Any, resolved: Resolved) -> int | str:
    t, task = cell.settings["training"], cell.settings["task_settings"]
    per_step = int(t["per_device_train_batch_size"]) * int(t["gradient_accumulation_steps"]) * _gpus(cell.settings)
    if t.get("max_steps"):
        return int(t["max_steps"]) * per_step
    if task["source"] == "synthetic":
        rows: int | None = int(task["synthetic"]["n_train"])
    else:
        files = resolved.data_files.get(f"finetune.tasks.{cell.task}") or []
        rows = count_rows(files) if files else None
        if rows is None:
            return "the dataset's rows are unknown (its files are not cached or not readable)"
    if t.get("max_samples"):
        rows = min(rows, int(t["max_samples"]))
    return math.ceil(float(t["num_train_epochs"]) * rows * (1 - float(task.get("val_size") or 0)))


def finetune_rows(plan: Plan, profile: Profile, results: Path, mfu: float, gpu: str, resolved: Resolved) -> list[Row]:
    rows: list[Row] = []
    rates = measured_rates(results, "finetune") if plan.finetune else {}
    for c in plan.finetune:
        cell, t = f"finetune {c.name}", c.settings["training"]
        resumes = t.get("checkpoint_interval") is not None
        samples = _samples(plan, c, resolved)
        if isinstance(samples, str):
            rows.append(skip(CHECK, cell, f"not predicted: {samples}"))
            continue
        tokens = samples * int(t["cutoff_len"])
        hit = rates.get(shape_key("finetune", c.settings))
        if hit:
            rows.append(_verdict(cell, tokens / hit[0], f"≤ {tokens:,} tokens at measured {hit[0]:,.0f} tokens/s",
                                 "finetune", profile, resumes))
            continue
        n = _finetune_params(plan, c, resolved)
        peak, source = _peak(plan.config, t["precision"], gpu)
        if isinstance(n, str) or peak is None:
            rows.append(skip(CHECK, cell, f"not predicted: {n if isinstance(n, str) else source}"))
            continue
        per_token = (8 if c.settings["method_settings"]["finetuning_type"] == "full" else 6) * n
        devices = _gpus(c.settings)
        rows.append(_verdict(cell, per_token * tokens / (mfu * peak * devices),
                             f"{samples:,} samples ≤ {tokens:.2e} tokens at MFU {mfu:g} of {devices} × "
                             f"{peak / 1e12:g} TFLOP/s", "finetune", profile, resumes))
    return rows


def runtime_rows(plan: Plan, resolved: Resolved, profile: Profile, results: Path, mfu: float = ASSUMED_MFU,
                 gpu: str = ASSUMED_GPU) -> list[Row]:
    rows = pretrain_rows(plan, profile, results, mfu, gpu) + finetune_rows(plan, profile, results, mfu, gpu, resolved)
    if plan.serve.quantize:
        rows.append(skip(CHECK, "quantize, eval, inference",
                         "run time not predicted for these stages (no cost model yet): check their first jobs"))
    return rows
