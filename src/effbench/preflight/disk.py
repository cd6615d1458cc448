"""Free disk under ``results:`` against the checkpoints the campaign will write.

Predicted bytes per cell (what the stages keep on disk; logs, records and samples are small):
- pretraining: the resume checkpoint (weights + fp32 master + AdamW moments, the planner's
  state bytes) and, for exported cells, a 16-bit Hugging Face copy;
- fine-tuning: full and freeze save the whole model (16-bit); LoRA methods save the adapter,
  rank × (in + out) per linear layer of every block, in fp32 (LlamaFactory upcasts trainable
  parameters); trainer checkpoints (``checkpoint_interval``) are not counted;
- quantization: the checkpoint at its precision (int4: packed weights, 16-bit embeddings).
Files already under ``results:`` are not subtracted: a re-run overwrites them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config.memory import vocab_size
from ..config.loaded import Plan
from ..plan.memory import GB, state_bytes
from ..plan.params import parameter_counts
from .memory import serving_shape, weight_bytes
from .references import Resolved
from .rows import Row, ok, problem, skip
from .shapes import Shape, from_hf_config, from_settings

CHECK = "disk"


def free_bytes(results: Path) -> tuple[int, Path]:
    """Free bytes of the file system that holds ``results`` (its nearest existing folder)."""
    p = results.resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free, p


def _pretrain(plan: Plan) -> tuple[float, list[str]]:
    vocab, where = vocab_size(plan.config)
    if vocab is None:
        return 0.0, [f"pretraining ({where})"]
    total = 0.0
    exported = {c.name for c in plan.exported}
    for c in plan.pretrain:
        n = parameter_counts(c.settings["model"], vocab)["total"]
        s = state_bytes(n, c.settings["training"]["precision"])
        total += s["weights"] + s["optimizer"] + (2 * n if c.name in exported else 0)
    return total, []


def _lora_params(shape: Shape, rank: int) -> int:
    return shape.layers * rank * sum(i + o for i, o in shape.linear_in_out)


def _finetune_shape(plan: Plan, cell: Any, resolved: Resolved) -> Shape | None:
    if cell.source.kind == "pretrained":
        vocab, _ = vocab_size(plan.config)
        return from_settings(cell.source.export.settings["model"], vocab) if vocab else None
    cfg = resolved.model_config.get(f"finetune.models.{cell.model}")
    try:
        return from_hf_config(cfg) if cfg else None
    except (KeyError, ValueError):
        return None


def _finetune(plan: Plan, resolved: Resolved) -> tuple[float, list[str]]:
    total, unknown = 0.0, set()
    for c in plan.finetune:
        shape = _finetune_shape(plan, c, resolved)
        if shape is None:
            unknown.add(f"finetune model {c.model}")
            continue
        m = c.settings["method_settings"]
        total += 4.0 * _lora_params(shape, int(m["lora_rank"])) if m["finetuning_type"] == "lora" else 2.0 * shape.total
    return total, sorted(unknown)


def _quantize(plan: Plan, resolved: Resolved) -> tuple[float, list[str]]:
    total, unknown = 0.0, set()
    for c in plan.serve.quantize:
        shape = serving_shape(plan, c.model, resolved)
        if isinstance(shape, str):
            unknown.add(f"quantize model {c.model}")
            continue
        total += weight_bytes(shape, c.precision)
    return total, sorted(unknown)


def disk_rows(plan: Plan, resolved: Resolved, results: Path | None = None) -> list[Row]:
    """Checkpoints predicted against the free space of ``results`` (preflight's ``--results``),
    else of the config's ``results:``."""
    fix = "`--results` (a file system with more room), or free space" if results is not None else \
        "config key `results` (a file system with more room), or free space"
    results = results if results is not None else Path(plan.config["results"])
    free, where = free_bytes(results)
    parts = {"pretrain": _pretrain(plan), "finetune": _finetune(plan, resolved), "quantize": _quantize(plan, resolved)}
    need = sum(b for b, _ in parts.values())
    unknown = [u for _, us in parts.values() for u in us]
    detail = (f"predicted checkpoints {need / GB:,.1f} GB ("
              + ", ".join(f"{k} {b / GB:,.1f}" for k, (b, _) in parts.items() if b) + f"); free {free / GB:,.1f} GB at {where}")
    if need > free:
        return [problem(CHECK, "results", detail, fix)]
    if unknown:
        return [skip(CHECK, "results", detail + f"; not counted (shape unknown): {', '.join(unknown)}")]
    return [ok(CHECK, "results", detail)]
