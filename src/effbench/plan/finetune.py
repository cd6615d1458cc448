"""Memory of a fine-tuning cell: bytes per GPU and on the host, before any job is submitted.

Pure Python (no torch), for the driver. Model states follow what LlamaFactory and DeepSpeed
hold: without DeepSpeed the frozen weights stay in the compute dtype and LlamaFactory upcasts
the trainable ones to fp32 (AdamW moments fp32; DDP's gradient buckets a second copy of the
gradients with several GPUs); with DeepSpeed the engine casts the model to bf16 and keeps fp32
master weights, moments and gradient partitions, ZeRO stage 2 dividing gradients and optimizer
state over the GPUs, stage 3 the weights too; offload moves the optimizer (and, stage 3, the
weights) to the host. Activations are one micro-batch of ``cutoff_len`` tokens under
LlamaFactory's default gradient checkpointing. Formulas and their checks: docs/memory-planner.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .fit import Verdict
from .ft_shape import NotPlanned, Shape, trainable_params
from .memory import FRAGMENTATION, GB, RUNTIME_OVERHEAD_BYTES

# Host memory of one rank apart from the states it holds: Python, torch, CUDA's and NCCL's host
# side, LlamaFactory, the tokenized dataset. Assumed, not yet measured (docs/memory-planner.md).
HOST_PER_PROCESS_BYTES = 8.0 * GB
# A ZeRO-3 rank loads the checkpoint shard by shard (Hugging Face shards are ~5 GB).
ZERO3_LOAD_BYTES = 5.0 * GB


@dataclass(frozen=True)
class Zero:
    """What a DeepSpeed config decides for memory (stage None: no DeepSpeed)."""

    stage: int | None = None
    offload_optimizer: bool = False
    offload_param: bool = False
    sub_group_size: int = 1_000_000_000  # DeepSpeed's default: stage 3 steps the optimizer one sub-group at a time

    @classmethod
    def from_file(cls, path: str | None) -> "Zero":
        if not path:
            return cls()
        p = Path(path).expanduser()
        if not p.is_file():
            raise NotPlanned(f"DeepSpeed config {path} is not on this machine (relative paths resolve against "
                             f"{os.getcwd()})")
        z = json.loads(p.read_text()).get("zero_optimization", {})

        def cpu(key: str) -> bool:
            return (z.get(key) or {}).get("device") in ("cpu", "nvme")

        return cls(int(z.get("stage", 0)), cpu("offload_optimizer"), cpu("offload_param"),
                   int(z.get("sub_group_size", 1_000_000_000)))

    def describe(self) -> str:
        if self.stage is None:
            return "no DeepSpeed"
        off = [k for k, on in (("optimizer", self.offload_optimizer), ("params", self.offload_param)) if on]
        return f"ZeRO-{self.stage}" + (f" + offload {'+'.join(off)}" if off else "")


@dataclass(frozen=True)
class Cell:
    """The planner's inputs of one fine-tuning cell."""

    shape: Shape
    trainable: int
    adapter: bool  # LoRA: the trainable parameters are added to the model; freeze/full train its own
    precision: str  # fp32 | bf16
    gpus: int
    zero: Zero
    micro_batch: int
    tokens_per_sample: int  # cutoff_len: the longest a padded micro-batch can be
    checkpointing: bool
    backward_layers: int | None = None  # layers the backward pass goes through (None: all)
    head_trainable: bool = False  # full fine-tuning trains the final norm and the output head

    @property
    def params(self) -> int:
        return self.shape.total_params() + (self.trainable if self.adapter else 0)


@dataclass(frozen=True)
class FinetuneEstimate:
    params: int
    trainable: int
    gpu: dict[str, float]  # bytes per GPU by component
    host: dict[str, float]  # bytes on the job's host (every rank) by component

    @property
    def counted(self) -> float:
        g = self.gpu
        return (g["weights"] + g["grads"] + g["optimizer"] + g["live_params"]
                + max(g["activations"], g["step_transient"]))

    @property
    def peak(self) -> float:
        """Per GPU, with the pretraining planner's allowance (fragmentation, CUDA context)."""
        return self.counted * (1 + FRAGMENTATION) + RUNTIME_OVERHEAD_BYTES

    @property
    def host_peak(self) -> float:
        h = self.host
        return h["runtime"] + max(h["load"], h["offloaded_optimizer"] + h["offloaded_params"])

    def as_dict(self) -> dict[str, float]:
        """Components in GB (gpu_*, host_*), for reports."""
        parts = {**{f"gpu_{k}": v for k, v in self.gpu.items()}, "counted": self.counted, "peak": self.peak,
                 **{f"host_{k}": v for k, v in self.host.items()}, "host_peak": self.host_peak}
        return {k: round(v / GB, 3) for k, v in parts.items()}


def state_bytes(c: Cell) -> tuple[dict[str, float], dict[str, float]]:
    """(per GPU, on the host) bytes of weights, gradients and optimizer state."""
    t, g = c.trainable, c.gpus
    n = c.params  # every parameter, the adapter's included
    if c.zero.stage is None:
        # torch AdamW on LlamaFactory's model: compute-dtype frozen weights, fp32 trainable ones
        frozen = 4 if c.precision == "fp32" else 2
        gpu = {"weights": (n - t) * frozen + t * 4, "grads": t * 4 * (2 if g > 1 else 1),  # + DDP buckets
               "optimizer": t * 8, "step_transient": t * 4}  # foreach/fused AdamW's temporaries
        return gpu, {"offloaded_optimizer": 0.0, "offloaded_params": 0.0}
    s = c.zero.stage
    if s == 3:
        weights, grads = 2 * n / g, 2 * t / g
    elif s == 2:
        weights, grads = 2 * n, 2 * t / g
    else:  # 0 and 1: replicated bf16 weights and gradients
        weights, grads = 2 * n, 2 * t
    opt_div = g if s >= 1 else 1
    optimizer, fp32_grads = 12 * t / opt_div, 4 * t / opt_div  # fp32 master + m + v; fp32 gradient partition
    host = {"offloaded_optimizer": 0.0, "offloaded_params": 0.0}
    if c.zero.offload_optimizer:
        host["offloaded_optimizer"] = (optimizer + fp32_grads) * g  # every rank's partition
        optimizer = fp32_grads = 0.0
    if c.zero.offload_param and s == 3:
        host["offloaded_params"] = weights * g
        weights = 0.0
    if s == 3:  # the fp32 gradients exist one optimizer sub-group at a time, inside step()
        fp32_grads = min(fp32_grads, 4.0 * c.zero.sub_group_size)
    return {"weights": weights, "grads": grads, "optimizer": optimizer, "step_transient": fp32_grads}, host


@dataclass(frozen=True)
class Activations:
    saved: float  # what autograd keeps at the end of the forward pass
    backward: float  # the most the backward pass adds on top: the loss's gradients or one recomputed layer

    @property
    def total(self) -> float:
        return self.saved + self.backward


def activation_bytes(c: Cell) -> Activations:
    """Activation bytes of one micro-batch, per GPU.

    Saved at the end of the forward pass: with LlamaFactory's gradient checkpointing the input
    of each layer the backward pass reaches (H per token; freeze's last n layers only), else
    every such layer's tensors; the final RMSNorm and the output head's input (3H + 1 when they
    train, H + 1 when frozen); the fp32 log-softmax the loss keeps (4 B per logit). The backward
    pass adds the larger of: the loss's gradients (fp32 gradient of the log-softmax and of its
    input, plus the compute-dtype gradient of the logits in bf16), or one layer recomputed
    (checkpointing; per token two RMSNorms ~3H each, q/k/v/o inputs and outputs, the MLP's
    input, gate, up, SiLU and product: H + 4F).
    """
    s, a = c.shape, (4 if c.precision == "fp32" else 2)
    tokens = c.micro_batch * c.tokens_per_sample
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    layer = 2 * 3 * s.hidden + s.hidden + q + 2 * kv + 2 * q + s.hidden + 4 * s.ffn
    per_layer = s.hidden if c.checkpointing else layer
    layers = s.layers if c.backward_layers is None else c.backward_layers
    head = 3 * s.hidden + 1 if c.head_trainable else s.hidden + 1  # a frozen norm / head keeps less
    saved = tokens * (layers * per_layer + head) * a + tokens * s.vocab * 4
    loss_grads = tokens * s.vocab * (8 + (a if a < 4 else 0))
    recompute = tokens * layer * a if c.checkpointing else 0.0
    return Activations(saved, max(loss_grads, recompute))


def estimate(c: Cell) -> FinetuneEstimate:
    gpu, host = state_bytes(c)
    n = c.params
    # ZeRO-3 gathers a layer's weights to run it, and prefetches the next: ~2 layers in bf16.
    gpu["live_params"] = 2 * 2 * c.shape.layer_params() if c.zero.stage == 3 else 0.0
    gpu["activations"] = activation_bytes(c).total
    dtype_bytes = 4 if c.precision == "fp32" else 2
    # Without ZeRO-3 every rank builds the whole model on the host before moving it to its GPU.
    load = c.gpus * (ZERO3_LOAD_BYTES if c.zero.stage == 3 else c.shape.total_params() * dtype_bytes)
    host.update(load=load, runtime=c.gpus * HOST_PER_PROCESS_BYTES)
    return FinetuneEstimate(n, c.trainable, gpu, host)


# --- a cell of the config ----------------------------------------------------------------------


def hf_cache_config(model_id: str) -> Path | None:
    """config.json of a Hugging Face id in the local cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache)."""
    env = os.environ
    hub = Path(env.get("HF_HUB_CACHE") or Path(env.get("HF_HOME", "~/.cache/huggingface")) / "hub").expanduser()
    snaps = hub / f"models--{model_id.replace('/', '--')}" / "snapshots"
    ref = hub / f"models--{model_id.replace('/', '--')}" / "refs" / "main"
    if ref.is_file() and (snaps / ref.read_text().strip() / "config.json").is_file():
        return snaps / ref.read_text().strip() / "config.json"
    found = sorted(snaps.glob("*/config.json")) if snaps.is_dir() else []
    return found[0] if found else None


def _export_shape(config: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face config of one of the pipeline's own exports (pretrain/export_hf.py)."""
    from ..config.memory import vocab_size
    from .params import num_query_groups

    vocab, where = vocab_size(config)
    if vocab is None:
        raise NotPlanned(where)
    H, n = int(model["hidden_size"]), int(model["num_attention_heads"])
    return {"model_type": "qwen2" if model.get("add_qkv_bias") else "llama", "hidden_size": H,
            "intermediate_size": int(model["ffn_hidden_size"]), "num_hidden_layers": int(model["num_layers"]),
            "num_attention_heads": n, "num_key_value_heads": num_query_groups(model), "head_dim": H // n,
            "vocab_size": vocab, "tie_word_embeddings": bool(model.get("tie_embeddings", False))}


def model_shape(config: dict[str, Any], cell: Any) -> tuple[Shape, str]:
    """The shape of a fine-tuning cell's model and where it came from: the pipeline's export
    settings, a local config.json (a path, or a Hugging Face id in the cache), or the config's
    ``finetune.models.<name>.shape`` hint. NotPlanned when none is there."""
    hint = config["finetune"]["models"][cell.model].get("shape")
    src = cell.source
    if src.kind == "pretrained":
        return Shape.from_config(_export_shape(config, src.export.settings["model"])), f"export of {src.ref}"
    local = Path(src.ref).expanduser() / "config.json" if src.kind == "path" else hf_cache_config(src.ref)
    if local is not None and local.is_file():
        return Shape.from_config(json.loads(local.read_text())), str(local)
    if hint:
        return Shape.from_config(hint), f"finetune.models.{cell.model}.shape"
    raise NotPlanned(f"no config.json of {src.ref} on this machine (HF cache: HF_HOME/hub) and no "
                     f"finetune.models.{cell.model}.shape hint")


def backward_reach(shape: Shape, method: dict[str, Any]) -> dict[str, Any]:
    """How far the backward pass goes: freeze's last n layers only; the head trains only in full."""
    kind, n = method["finetuning_type"], int(method.get("freeze_trainable_layers") or 2)
    layers = min(n, shape.layers) if kind == "freeze" and n > 0 else None
    return {"backward_layers": layers, "head_trainable": kind == "full"}


def plan_cell(config: dict[str, Any], cell: Any) -> tuple[Cell, str]:
    s = cell.settings
    t, m = s["training"], s["method_settings"]
    shape, where = model_shape(config, cell)
    extra = {**(t.get("extra_args") or {}), **(m.get("extra_args") or {})}
    return Cell(**backward_reach(shape, m), shape=shape, trainable=trainable_params(shape, m), adapter=m["finetuning_type"] == "lora",
                precision=t["precision"],
                gpus=int(s["parallel"]["gpus"]), zero=Zero.from_file(m.get("deepspeed") or t.get("deepspeed")),
                micro_batch=int(t["per_device_train_batch_size"]), tokens_per_sample=int(t["cutoff_len"]),
                checkpointing=not extra.get("disable_gradient_checkpointing", False)), where


# --- verdicts ------------------------------------------------------------------------------------

# Cheapest first: sharding before offload (offload costs PCIe/C2C traffic every step).
REMEDIES = (Zero(2), Zero(3), Zero(3, offload_optimizer=True), Zero(3, offload_optimizer=True, offload_param=True))


@dataclass(frozen=True)
class FinetuneVerdict(Verdict):
    """A fine-tuning cell's verdict: per GPU (Verdict's fields) and on the host; a cell the
    planner could not size is ``not planned`` with its reason, never a pass."""

    host_gb: float | None = None
    host_allowed_gb: float | None = None
    reason: str | None = None  # why the cell is not planned
    detail: str = ""  # the recipe: GPUs, ZeRO, where the shape came from
    hints: tuple[str, ...] = field(default_factory=tuple)

    @property
    def planned(self) -> bool:
        return self.reason is None

    @property
    def host_fits(self) -> bool:
        return self.host_allowed_gb is None or (self.host_gb is not None and self.host_gb <= self.host_allowed_gb)

    @property
    def fits(self) -> bool:
        return self.planned and self.predicted_gb <= self.allowed_gb and self.host_fits

    def message(self) -> str:
        if not self.planned:
            return f"finetune cell {self.cell}: not planned: {self.reason}"
        host = (f", host {self.host_gb:.0f} of {self.host_allowed_gb:g} GB" if self.host_allowed_gb is not None
                else f", host {self.host_gb:.0f} GB (not checked: no cluster.host_memory_gb)")
        head = (f"finetune cell {self.cell}: predicted {self.predicted_gb:.1f} GB per GPU of {self.allowed_gb:g} GB"
                f"{host} ({self.detail})")
        if self.fits:
            return head + " (fits)"
        return head + "; " + ("; ".join(self.hints) if self.hints else "nothing the planner knows fits: use more GPUs "
                              "(finetune.models.<name>.gpus) or more host memory")


def _hints(name: str, c: Cell, gpu_gb: float, host_gb: float | None) -> tuple[str, ...]:
    """The first DeepSpeed recipe predicted to fit at the cell's GPUs, as the key to set."""
    for z in REMEDIES:
        e = estimate(replace(c, zero=z))
        if e.peak / GB <= gpu_gb and (host_gb is None or e.host_peak / GB <= host_gb):
            return (f"it would fit with a DeepSpeed config of {z.describe()} (finetune.methods.<method>.deepspeed or "
                    f"finetune.models.{name.split('/')[0]}.overrides; predicted {e.peak / GB:.1f} GB per GPU, host "
                    f"{e.host_peak / GB:.0f} GB)",)
    return ()


def check_finetune_cell(config: dict[str, Any], cell: Any, gpu_gb: float,
                        host_gb: float | None) -> FinetuneVerdict:
    nan = float("nan")
    try:
        c, where = plan_cell(config, cell)
    except NotPlanned as e:
        return FinetuneVerdict(cell.name, nan, float(gpu_gb), None, None, None, host_allowed_gb=host_gb, reason=str(e))
    e = estimate(c)
    detail = f"{c.gpus} GPU(s), {c.zero.describe()}, shape from {where}"
    v = FinetuneVerdict(cell.name, e.peak / GB, float(gpu_gb), e, None, None, host_gb=e.host_peak / GB,
                        host_allowed_gb=host_gb, detail=detail)
    return v if v.fits else replace(v, hints=_hints(cell.name, c, gpu_gb, host_gb))


def finetune_memory_verdicts(config: dict[str, Any], host_memory_gb: float | None = None) -> list[Verdict]:
    """One verdict per fine-tuning cell of a validated config (``effbench.config.plan(...).config``),
    against ``cluster.gpu_memory_gb`` per GPU and the host memory of a fine-tuning job:
    ``host_memory_gb`` (e.g. the Slurm profile's finetune mem_mb / 1000), else
    ``cluster.host_memory_gb``, else unchecked (the message says so). Empty without a GPU size."""
    from ..config.finetune import finetune_cells
    from ..config.pretrain import export_cells, pretrain_cells

    cluster = config.get("cluster") or {}
    gpu_gb = cluster.get("gpu_memory_gb")
    if not gpu_gb or not config.get("finetune"):
        return []
    host = host_memory_gb if host_memory_gb is not None else cluster.get("host_memory_gb")
    cells = finetune_cells(config, export_cells(config, pretrain_cells(config)))
    return [check_finetune_cell(config, c, gpu_gb, host) for c in cells]
