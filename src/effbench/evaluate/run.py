"""Score one model × precision with lm-evaluation-harness and keep every task's score and stderr.

Backends (``eval.model``): ``hf`` (transformers; loads int4 compressed-tensors checkpoints
too) or ``vllm`` (the paper's setup, on the cluster). The mean over tasks is the table's
"Perf" (the paper averages its six benchmarks). Offline: ``HF_HUB_OFFLINE`` and
``HF_DATASETS_OFFLINE`` are set, local tasks are found through ``include_path``.

The pipeline's own tasks (:mod:`effbench.evaluate.tasks`) are rescored per item from the
logged log-likelihoods with ties counted 1/k (:mod:`effbench.evaluate.scoring`) and carry
their two controls (question-blind, swapped subject), scored in the same lm-eval run. Every task's per-item results
are kept (``items``), so precisions are compared on the same items (paired).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..config import LOCAL_TASKS
from .scoring import item_scores, sample_values, task_summary, verdict
from .tasks import CHANCE, control_task, swapped_task

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
    """{task: {metric, value, stderr, n}}, their unweighted mean, and each task's per-item results
    (pure; unit-tested).

    A local task (:data:`LOCAL_TASKS`) whose samples were logged is rescored with ties
    counted 1/k (metric ``acc_tie``; lm-eval's own ``acc`` kept as ``lm_eval_acc``) and gets
    ``ties``, ``chance``, ``z_chance``, ``control`` ({value, stderr, n, ties} of its
    question-blind twin), ``z_control``, ``swapped`` and ``z_swapped`` (its swapped-subject twin)
    and ``measurable``.

    ``items``: {task: {doc_id (a string, as JSON keys are): the item's score}}: the tie-aware
    score of a local task's item, the logged sample's own metric for any other task (a group:
    its subtasks' items, keyed ``<subtask>/<doc_id>``); a task whose samples do not give one
    number per item has none. The aggregation compares two precisions on these items (paired,
    :mod:`effbench.aggregate.quality`)."""
    out: dict[str, Any] = {}
    items: dict[str, dict[str, float]] = {}
    samples = results.get("samples") or {}
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
        if task in LOCAL_TASKS and task in samples:
            out[task] = _rescore(out[task], samples[task], samples.get(control_task(task)),
                                 samples.get(swapped_task(task)))
            items[task] = {str(i): v for i, (v, _) in sorted(item_scores(samples[task]).items())}
        else:
            per_item = _sample_items(results, task, metric, filt)
            if per_item:
                items[task] = per_item
    mean = sum(v["value"] for v in out.values()) / len(out)
    return {"tasks": out, "accuracy": mean, "items": items}


def _sample_items(results: dict[str, Any], task: str, metric: str, filt: str) -> dict[str, float] | None:
    """A task's per-item ``metric`` from its logged samples, or a group's from its subtasks'."""
    samples = results.get("samples") or {}
    if task in samples:
        got = sample_values(samples[task], metric, filt)
        return {str(i): v for i, v in sorted(got.items())} if got else None
    subtasks = (results.get("group_subtasks") or {}).get(task)
    if not subtasks:
        return None
    out: dict[str, float] = {}
    for sub in subtasks:
        got = _sample_items(results, sub, metric, filt)
        if not got:
            return None
        out.update({f"{sub}/{k}": v for k, v in got.items()})
    return out


def _rescore(lm_eval_entry: dict[str, Any], task_samples: list[dict], control_samples: list[dict] | None,
             swapped_samples: list[dict] | None) -> dict[str, Any]:
    items = item_scores(task_samples)
    control = item_scores(control_samples) if control_samples is not None else None
    swapped = item_scores(swapped_samples) if swapped_samples is not None else None
    summary = task_summary(items)
    return {"metric": "acc_tie", **summary, "lm_eval_acc": lm_eval_entry["value"],
            "lm_eval_acc_stderr": lm_eval_entry["stderr"], **verdict(summary, items, control, CHANCE, swapped)}


def equal_length_share(task_samples: list[dict], tokenizer) -> float:
    """Share of items whose choices all have the same number of tokens (as lm-eval scores
    them: after the " " target delimiter)."""
    same = 0
    for s in task_samples:
        lengths = {len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in s["doc"]["choices"]}
        same += len(lengths) == 1
    return same / len(task_samples)


def with_controls(tasks: list[str], include_path: Path | None) -> list[str]:
    """``tasks`` plus the control twins (question-blind, swapped subject) of each local task that
    has them on disk."""
    extra = [twin(t) for twin in (control_task, swapped_task) for t in tasks if t in LOCAL_TASKS
             and include_path is not None and (Path(include_path) / f"{twin(t)}.yaml").exists()]
    return list(tasks) + extra


def needs_builtin_tasks(tasks: list[str], include_path: Path | None) -> bool:
    """Whether lm-eval must index its built-in tasks: not when every task is the pipeline's own
    (found under ``include_path``). Indexing the built-ins reads thousands of task files: 15-18 s
    of each eval job on 2 cores, for tasks the embedded default never runs."""
    return include_path is None or any(t not in LOCAL_TASKS for t in tasks)


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
    tasks = list(settings["tasks"])
    tm = TaskManager(include_path=str(include_path) if include_path else None,
                     include_defaults=needs_builtin_tasks(tasks, include_path))
    t0 = time.monotonic()
    results = lm_eval.simple_evaluate(
        model=settings["backend"], model_args=model_args, tasks=with_controls(tasks, include_path),
        log_samples=True,
        num_fewshot=settings["num_fewshot"], batch_size=settings["batch_size"], limit=settings["limit"],
        device=device, task_manager=tm, random_seed=settings["seed"], numpy_random_seed=settings["seed"],
        torch_random_seed=settings["seed"], fewshot_random_seed=settings["seed"],
    )
    seconds = time.monotonic() - t0
    summary = summarize(results, tasks, settings["metrics"])
    local = [t for t in tasks if t in LOCAL_TASKS and t in (results.get("samples") or {})]
    if local:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        for t in local:
            summary["tasks"][t]["equal_length_share"] = equal_length_share(results["samples"][t], tok)
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
