"""Score one model × precision with lm-evaluation-harness and keep every task's score and stderr.

Backends (``eval.model``): ``hf`` (transformers; loads int4 compressed-tensors checkpoints
too) or ``vllm`` (the paper's setup, on the cluster). The mean over tasks is the table's
"Perf" (the paper averages its six benchmarks). Offline: ``HF_HUB_OFFLINE`` and
``HF_DATASETS_OFFLINE`` are set, local tasks are found through ``include_path``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("effbench.evaluate")

# A task's headline metric when the config does not name one: the first it reports.
METRIC_PREFERENCE = ("acc_norm", "acc", "exact_match", "prompt_level_strict_acc", "inst_level_strict_acc")
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def pick_metric(task_results: dict[str, Any], wanted: str | None) -> str:
    names = {k.split(",")[0] for k in task_results if "," in k and not k.split(",")[0].endswith("_stderr")}
    if wanted:
        if wanted not in names:
            raise KeyError(f"metric {wanted!r} not reported; reported: {sorted(names)}")
        return wanted
    for m in METRIC_PREFERENCE:
        if m in names:
            return m
    raise KeyError(f"none of {METRIC_PREFERENCE} reported; reported: {sorted(names)}")


def summarize(results: dict[str, Any], tasks: list[str], metrics: dict[str, str]) -> dict[str, Any]:
    """{task: {metric, value, stderr, n}} and their unweighted mean (pure; unit-tested)."""
    out: dict[str, Any] = {}
    for task in tasks:
        r = results["results"].get(task)
        if r is None:
            raise KeyError(f"lm-evaluation-harness returned no result for task {task!r}")
        metric = pick_metric(r, metrics.get(task))
        key = next(k for k in r if k.split(",")[0] == metric)
        filt = key.split(",", 1)[1]
        stderr = r.get(f"{metric}_stderr,{filt}")
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        out[task] = {"metric": metric, "value": float(r[key]),
                     "stderr": float(stderr) if isinstance(stderr, (int, float)) else None, "n": n}
    mean = sum(v["value"] for v in out.values()) / len(out)
    return {"tasks": out, "accuracy": mean}


def evaluate_cell(settings: dict[str, Any], model_dir: Path, include_path: Path | None, device: str
                  ) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    if device == "cpu":
        torch.set_num_threads(settings["threads"])
    dtype = TORCH_DTYPES[settings["dtype"]]
    if settings["backend"] == "hf":
        model_args: dict[str, Any] = {"pretrained": str(model_dir), "dtype": dtype}
    else:
        v = settings["vllm"]
        model_args = {"pretrained": str(model_dir), "dtype": dtype, "max_model_len": settings["max_model_len"],
                      "enforce_eager": v["enforce_eager"] or device == "cpu", "seed": settings["seed"]}
        if device == "cuda":
            model_args["gpu_memory_utilization"] = v["gpu_memory_utilization"]
        else:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(v["cpu_kvcache_gb"]))))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    tm = TaskManager(include_path=str(include_path) if include_path else None)
    t0 = time.monotonic()
    results = lm_eval.simple_evaluate(
        model=settings["backend"], model_args=model_args, tasks=list(settings["tasks"]),
        num_fewshot=settings["num_fewshot"], batch_size=settings["batch_size"], limit=settings["limit"],
        device=device, task_manager=tm, random_seed=settings["seed"], numpy_random_seed=settings["seed"],
        torch_random_seed=settings["seed"], fewshot_random_seed=settings["seed"],
    )
    seconds = time.monotonic() - t0
    summary = summarize(results, list(settings["tasks"]), settings["metrics"])
    from importlib import metadata

    return {
        "model": settings["model"],
        "precision": settings["precision"],
        "backend": settings["backend"],
        "lm_eval_version": metadata.version("lm_eval"),
        "num_fewshot": settings["num_fewshot"],
        "limit": settings["limit"],
        "seconds": seconds,
        "device": device,
        **summary,
    }
