"""Predicted GPU memory per cell against ``cluster.gpu_memory_gb``, as a list of per-stage
checks (each ``(config, plan, resolved) -> rows``), so another stage's planner plugs in:

- pretraining: the memory planner (:func:`effbench.config.memory.memory_verdicts`);
- fine-tuning: ``effbench.plan.finetune.finetune_memory_verdicts`` (ZeRO stages, offload);
- serving (eval and inference, vLLM): weights at the cell's precision, plus the runtime
  allowance the planner assumes, plus the KV cache of one sequence of ``max_model_len`` tokens
  (vLLM refuses to start without it) must fit ``inference.vllm.gpu_memory_utilization`` of the
  GPU; the detail says how many of a load point's sequences the rest of the KV pool holds at once
  (vLLM queues the others: not a failure, but the load point is then not served as configured).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from ..config.memory import memory_verdicts, vocab_size
from ..config.loaded import Plan
from ..config.serving import WEIGHT_BITS
from ..plan.finetune import finetune_memory_verdicts
from ..plan.memory import GB, RUNTIME_OVERHEAD_BYTES
from .device import Device
from .profile import Profile
from .references import Resolved
from .rows import Row, ok, problem, skip
from .shapes import Shape, from_hf_config, from_settings

CHECK = "memory"
GPU_KEY = "config key `cluster.gpu_memory_gb`"
# int4 (compressed-tensors pack-quantized, group 128): 4 bits per weight plus a bf16 scale and a
# packed int4 zero point per group of 128 weights.
INT4_BYTES_PER_WEIGHT = 0.5 + (2 + 0.5) / 128


def _gpu_gb(config: dict[str, Any]) -> float | None:
    return (config.get("cluster") or {}).get("gpu_memory_gb")


def pretrain_rows(plan: Plan, resolved: Resolved) -> list[Row]:
    if not plan.pretrain:
        return []
    if _gpu_gb(plan.config) is None:
        return [problem(CHECK, "pretrain", "no GPU memory size given: nothing can be checked", GPU_KEY)]
    vocab, where = vocab_size(plan.config)
    if vocab is None:
        return [problem(CHECK, "pretrain", f"vocabulary size unknown: {where}", "config key `data.pretrain.shards.vocab_size`")]
    rows = []
    for v in memory_verdicts(plan.config, plan.pretrain):
        rows.append(ok(CHECK, f"pretrain {v.cell}", v.message()) if v.fits
                    else problem(CHECK, f"pretrain {v.cell}", v.message(),
                                 "config keys `pretrain.training.micro_batch_size`, `pretrain.parallel`, or " + GPU_KEY))
    return rows


HOST_CONFIG_KEY = "config key `cluster.host_memory_gb`"


def finetune_host(config: dict[str, Any], profile: Profile | None) -> tuple[float | None, str]:
    """Host memory a fine-tuning job gets (GB) and the key that sets it: the profile's finetune
    mem_mb (what Slurm grants the job), else ``cluster.host_memory_gb``, else unknown."""
    mb = profile.resource("finetune", "mem_mb") if profile is not None else None
    if mb is not None:
        return mb / 1000, profile.key("finetune", "mem_mb")  # type: ignore[union-attr]
    gb = (config.get("cluster") or {}).get("host_memory_gb")
    return (float(gb), HOST_CONFIG_KEY) if gb is not None else (None, "set-resources.finetune.mem_mb or " + HOST_CONFIG_KEY)


def _offloads(v: Any) -> bool:
    host = getattr(getattr(v, "estimate", None), "host", None) or {}
    return host.get("offloaded_optimizer", 0.0) + host.get("offloaded_params", 0.0) > 0


def finetune_rows(plan: Plan, resolved: Resolved, profile: Profile | None = None) -> list[Row]:
    """The fine-tuning planner's verdicts (``.cell``, ``.fits``, ``.message()``), or why there are none.
    Host memory comes from the profile's finetune mem_mb (else ``cluster.host_memory_gb``); a cell
    that offloads to an unknown host is a skip, not a pass."""
    if not plan.finetune:
        return []
    if _gpu_gb(plan.config) is None:  # the planner has nothing to plan against (it returns no verdict)
        return [problem(CHECK, "finetune", "no GPU memory size given: nothing can be checked", GPU_KEY)]
    host_gb, host_key = finetune_host(plan.config, profile)
    rows = []
    for v in finetune_memory_verdicts(plan.config, host_memory_gb=host_gb):
        cell = f"finetune {v.cell}"
        if not v.fits:
            rows.append(problem(CHECK, cell, v.message(), "config keys `finetune.parallel`, "
                                f"`finetune.methods.<method>.deepspeed`, {GPU_KEY}, or host memory: {host_key}"))
        elif host_gb is None and _offloads(v):
            rows.append(skip(CHECK, cell, v.message() + f"; offloads to the host, whose memory was not checked ({host_key} unset)"))
        else:
            rows.append(ok(CHECK, cell, v.message()))
    return rows or [problem(CHECK, "finetune", "the fine-tuning planner returned no verdict", "effbench.plan.finetune")]


def weight_bytes(shape: Shape, precision: str) -> float:
    if WEIGHT_BITS[precision] == 16:
        return 2.0 * shape.total
    return shape.linear * INT4_BYTES_PER_WEIGHT + 2.0 * shape.embedding  # embeddings and lm_head stay 16-bit


def serving_shape(plan: Plan, model: str, resolved: Resolved) -> Shape | str:
    """The shape of a serving model, or why it is unknown here."""
    src = next(c.source for c in plan.serve.quantize if c.model == model)
    if src is not None and src.kind == "pretrained":
        vocab, where = vocab_size(plan.config)
        return from_settings(src.export.settings["model"], vocab) if vocab else f"vocabulary unknown ({where})"
    cfg = resolved.model_config.get(f"quantize.models.{model}")
    if cfg is None:
        return "its config.json is not available (see its reference row)"
    try:
        return from_hf_config(cfg)
    except (KeyError, ValueError) as e:
        return f"config.json not understood ({type(e).__name__}: {e})"


def serving_rows(plan: Plan, resolved: Resolved) -> list[Row]:
    cells = plan.serve.inference or plan.serve.eval
    if not cells:
        return []
    gpu = _gpu_gb(plan.config)
    if gpu is None:
        return [problem(CHECK, "serving", "no GPU memory size given: nothing can be checked", GPU_KEY)]
    c = plan.config
    v = (c.get("inference") or {}).get("vllm") or cells[0].settings["vllm"]
    util = float(v["gpu_memory_utilization"])
    max_len = max(int(v["max_model_len"]), int((c.get("eval") or {}).get("max_model_len") or 0))
    budget = util * gpu * GB
    rows = []
    for model, precision in dict.fromkeys((x.model, x.precision) for x in cells):
        cell = f"serve {model}/{precision}"
        shape = serving_shape(plan, model, resolved)
        if isinstance(shape, str):
            rows.append(skip(CHECK, cell, f"not predicted: {shape}"))
            continue
        weights = weight_bytes(shape, precision)
        kv_token = shape.kv_bytes_per_token()
        need = weights + RUNTIME_OVERHEAD_BYTES + kv_token * max_len
        head = (f"weights {weights / GB:.1f} GB + runtime {RUNTIME_OVERHEAD_BYTES / GB:.0f} GB + KV of one "
                f"{max_len}-token sequence {kv_token * max_len / GB:.2f} GB = {need / GB:.1f} GB of "
                f"{util:g} × {gpu:g} GB")
        if need > budget:
            rows.append(problem(CHECK, cell, head + ": vLLM cannot start",
                                "config keys `inference.vllm.gpu_memory_utilization`, `inference.vllm.max_model_len`, "
                                f"`quantize.precisions`, or {GPU_KEY}"))
            continue
        pool = budget - weights - RUNTIME_OVERHEAD_BYTES
        held = []
        for x in plan.serve.inference:
            if (x.model, x.precision) == (model, precision):
                p = x.settings["point"]
                seqs = min(int(p["concurrency"]), int(v["max_num_seqs"]))
                fits = int(pool // (kv_token * (p["prompt_len"] + p["output_len"])))
                if fits < seqs:
                    held.append(f"{x.load_point} holds {fits} of {seqs} sequences at once")
        rows.append(ok(CHECK, cell, head + (f"; KV pool {pool / GB:.1f} GB: " + ", ".join(held) if held else " (fits)")))
    return rows


# The per-stage checks, in table order; each takes the plan and what the references check resolved.
STAGE_CHECKS: list[Callable[[Plan, Resolved], list[Row]]] = [pretrain_rows, finetune_rows, serving_rows]


def memory_rows(plan: Plan, resolved: Resolved, profile: Profile | None = None, device: Device | None = None) -> list[Row]:
    """The per-stage checks; ``device``: what the config's `device` is here (:func:`.device.resolve`;
    None: the config's word as it stands, `auto` judged like a GPU)."""
    kind = device.kind if device is not None else plan.config["device"]
    if kind == "cpu":
        return [skip(CHECK, "all", ((device.note if device is not None else None) or "device is cpu")
                     + ": no GPU memory to plan")]
    checks = [partial(finetune_rows, profile=profile) if c is finetune_rows else c for c in STAGE_CHECKS]
    head = [ok(CHECK, "device", device.note)] if device is not None and device.note else []
    return head + [row for check in checks for row in check(plan, resolved)]
