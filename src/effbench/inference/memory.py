"""Serving memory: the KV budget an engine load reserves, and AMU split into weights, KV cache
and the rest (the runtime) for the record.

The split: weights and KV reserved are what the engine's worker holds (its parameters and KV
cache tensors); KV used at peak is the scheduler's largest KV-cache usage during the point;
the runtime is AMU − weights − KV reserved (interpreter, libraries, allocator slack,
activations, other engine processes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..measure.figure import Figure
from .kv_cache import kv_budget_bytes, kv_bytes_per_token_of, kv_dtype

GB = 1e9


def kv_budget(settings: dict[str, Any], model_dir: Path, loads: list[dict[str, Any]]) -> int:
    """Bytes of KV cache that hold the largest of ``loads`` (load points) at once, at the KV
    cache's dtype (``vllm.kv_cache_dtype``: fp8 holds 1 byte per element). An open-loop point
    holds at most its ``concurrency`` cap in flight."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    v = settings["vllm"]
    pairs = [(min(lp["concurrency"], v["max_num_seqs"]), lp["prompt_len"] + lp["output_len"]) for lp in loads]
    dtype = kv_dtype(v.get("kv_cache_dtype"), settings["dtype"])
    return kv_budget_bytes(kv_bytes_per_token_of(cfg, dtype), pairs, v["block_size"],
                           v["max_model_len"], v["kv_cache_headroom"])


def memory_figures(engine: Any, amu_gb: Figure, kv_budget_bytes: int) -> dict[str, Any]:
    """The record's memory split for one load point; ``engine.memory`` is what it reported."""
    mem: dict[str, Any] = getattr(engine, "memory", None) or {}
    peaks = getattr(engine, "peaks", None)
    why = f"the {engine.name} engine reports no {{}}"
    out: dict[str, Any] = {"kv_cache_budget_bytes": kv_budget_bytes if "kv_allocated_bytes" in mem else None}
    weights = (Figure.of(mem["weights_bytes"] / GB, mem["weights_source"]) if "weights_bytes" in mem
               else Figure.missing(why.format("weight bytes")))
    if "kv_allocated_bytes" in mem:
        per_token = sum(mem["kv_bytes_per_token_per_layer"].values())
        kv = Figure.of(mem["kv_allocated_bytes"] / GB, "vllm_worker_kv_cache_tensors")
        usable_blocks = mem["kv_allocated_bytes"] // (mem["block_size"] * per_token) - 1  # less the null block
        used = (Figure.of(round(peaks.kv_usage * usable_blocks) * mem["block_size"] * per_token / GB,
                          "vllm_scheduler_kv_cache_usage_peak×block_bytes")
                if peaks is not None and peaks.steps else Figure.missing("the scheduler reported no step"))
        out["kv_bytes_per_token"] = per_token
    else:
        kv = used = Figure.missing(why.format("KV cache reservation (it grows a cache per batch)"))
        out["kv_bytes_per_token"] = mem.get("kv_bytes_per_token")
    if amu_gb.measured and weights.measured and kv.measured:
        runtime = Figure.of(amu_gb.value - weights.value - kv.value, f"{amu_gb.source}-weights-kv_reserved")
    else:
        runtime = Figure.missing("needs AMU, weights and KV reserved")
    return {**out, "mem_weights_gb": weights, "mem_kv_reserved_gb": kv, "mem_kv_peak_used_gb": used,
            "mem_runtime_gb": runtime}
