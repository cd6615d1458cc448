"""Bytes per GPU of one pretraining cell: model states plus activations of one micro-batch.

Model states follow the stage's precision recipe (`pretrain/mixed_precision.py`) under an
optimizer-sharding setting; activations count, tensor by tensor, what autograd saves for
the backward pass in the model the stage builds (megatron-core local spec with torch SDPA
core attention, SwiGLU, RMSNorm, RoPE, no dropout), in the manner of Korthikanti et al.
2022 ("Reducing Activation Recomputation in Large Transformer Models", section 4). The
per-tensor list and its validation against the real model: docs/memory-planner.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import families
from .params import expert_parameters, num_query_groups, parameter_counts
from .stack import megatron_selected

GB = 1e9  # decimal gigabytes, as cluster.gpu_memory_gb and the records use

SHARDINGS = ("none", "optimizer", "optimizer+grads")
RECOMPUTES = ("none", "selective", "full")

# Allowance for what the formula leaves out: the CUDA context and NCCL buffers (a fixed
# amount per process) and caching-allocator fragmentation (a fraction of what is counted).
# Assumed, not yet measured on a GPU: docs/memory-planner.md says what the GPU check records.
RUNTIME_OVERHEAD_BYTES = 2.0 * GB
FRAGMENTATION = 0.05


@dataclass(frozen=True)
class Recipe:
    """Bytes per parameter of each model state, before sharding."""

    weights: int
    grads: int
    master: int  # fp32 master copy (0 when the weights are fp32 already)
    moments: int  # AdamW m and v
    step_grads: int  # transient fp32 gradient copies made inside optimizer.step()
    activation: int  # bytes per activation element


# bf16: MasterWeightAdamW (bf16 weights/grads, fp32 master, fp32 m and v; step() makes an
# fp32 copy of every gradient). fp32: plain torch AdamW, the states in fp32.
RECIPES = {
    "bf16": Recipe(weights=2, grads=2, master=4, moments=8, step_grads=4, activation=2),
    "fp32": Recipe(weights=4, grads=4, master=0, moments=8, step_grads=0, activation=4),
}


def state_bytes(n_params: int, precision: str, sharding: str = "none", data_parallel: int = 1,
                expert_params: int = 0, expert_parallel: int = 1, megatron: bool = False) -> dict[str, float]:
    """Model-state bytes per GPU.

    sharding: none (torch DDP: every rank holds everything, and DDP's gradient buckets are
    a second copy of the gradients when data_parallel > 1); optimizer (ZeRO-1: master
    weights and moments divided by data_parallel); optimizer+grads (ZeRO-2: gradients too).
    megatron: the cell runs on megatron-core's stack (`plan.stack`): its DDP keeps one fp32
    gradient buffer (grad_reduce_in_fp32) of every local parameter, never sharded (its
    distributed optimizer shards masters and moments only), and the optimizer's fp32 gradients
    are views of it: 4 B/param of gradients, no DDP bucket copy, no step() copy.
    expert_params of the n_params are split over expert_parallel ranks (each holds
    1/expert_parallel of the experts); their optimizer state is sharded over the ranks that
    hold the same experts (data_parallel / expert_parallel, megatron's expert data parallel).
    """
    if sharding not in SHARDINGS:
        raise ValueError(f"optimizer_sharding must be one of {SHARDINGS}, got {sharding!r}")
    dp, ep = max(1, int(data_parallel)), max(1, int(expert_parallel))
    if dp % ep:
        raise ValueError(f"expert_parallel {ep} must divide data_parallel {dp}")
    dense, experts = n_params - expert_params, expert_params / ep
    d, e = _states(dense, precision, sharding, dp, megatron), _states(experts, precision, sharding, dp // ep, megatron)
    return {k: d[k] + e[k] for k in ("weights", "grads", "optimizer", "step_transient")}


MEGATRON_GRAD_BYTES = 4  # megatron DDP's fp32 gradient buffer (grad_reduce_in_fp32 in bf16; fp32 params otherwise)


def _states(n: float, precision: str, sharding: str, dp: int, megatron: bool = False) -> dict[str, float]:
    """State bytes of n parameters replicated over dp ranks (sharded over them per `sharding`)."""
    r = RECIPES[precision]
    opt_div = dp if sharding != "none" else 1
    grad_div = dp if sharding == "optimizer+grads" else 1
    if megatron:  # optimizer+grads (planner only, not in the schema) would shard the buffer too
        return {"weights": n * r.weights, "grads": n * MEGATRON_GRAD_BYTES / grad_div,
                "optimizer": n * (r.master + r.moments) / opt_div, "step_transient": 0.0}
    ddp_buckets = r.grads if sharding == "none" and dp > 1 else 0  # gradient_as_bucket_view=False
    return {
        "weights": n * r.weights,
        "grads": n * (r.grads / grad_div + ddp_buckets),
        "optimizer": n * (r.master + r.moments) / opt_div,
        "step_transient": n * r.step_grads / opt_div,
    }


def _norm(H: int) -> float:
    # torch RMSNorm (megatron's WrappedTorchNorm): saves x, rstd (1 per token), x * rstd.
    return 2 * H + 1


def attention_elements(model: dict[str, Any], math_kernel: bool, recompute: str) -> float:
    """Elements saved per token by one layer's attention block (norm through linear_proj input).

    math_kernel: SDPA falls back to its math path (saves the softmax probabilities, n·s per
    token) instead of a flash / memory-efficient kernel (saves the log-sum-exp, n per token).
    """
    H, n, s = int(model["hidden_size"]), int(model["num_attention_heads"]), int(model["seq_length"])
    core = n * s if math_kernel else n  # probabilities or log-sum-exp
    if recompute != "none":
        core = 0  # selective: core attention is recomputed, only its inputs stay
    if model["attention"] == "nsa":
        # A model, not a tensor-by-tensor count (docs/pretrain-families.md): q/k/v input and
        # output, rotated q and k, per branch its probabilities (compressed, selected, window
        # keys per query per head) and its output, the gate, the output projection's input.
        from .params import nsa_attended_keys

        d, g, o = H // n, num_query_groups(model), model["nsa"]
        probs = n * nsa_attended_keys(model, s)
        # The reference path gathers every query's selected key and value blocks (GQA heads).
        gathered = 2 * g * int(o["num_selected_blocks"]) * int(o["selection_block_size"]) * d
        return _norm(H) + H + (n + 2 * g) * d + n * d + g * d + probs + gathered + 3 * n * d + 3 * n + n * d
    if model["attention"] == "mla":
        m = model["mla"]
        qk, pe, v = int(m["qk_head_dim"]), int(m["qk_pos_emb_head_dim"]), int(m["v_head_dim"])
        kv_r, q_r = int(m["kv_lora_rank"]), m.get("q_lora_rank")
        # q_proj / kv_down input, kv_down output (held by the kv_up input view), the
        # contiguous q and k (with RoPE parts), contiguous v, SDPA output (= linear_proj input).
        total = H + (kv_r + pe) + 2 * n * (qk + pe) + n * v + n * v + core
        if q_r is not None:  # q_down output, q/kv latent norms, q_up and kv_up inputs
            total += 3 * int(q_r) + 1 + 2 * kv_r + 1
        return _norm(H) + total
    d = H // n
    g = num_query_groups(model)
    # linear_qkv input, its output (v is a view of it), q and k after RoPE, SDPA output
    # (linear_proj's input is a view of it).
    return _norm(H) + H + (n + 2 * g) * d + n * d + g * d + n * d + core


def mlp_elements(model: dict[str, Any]) -> float:
    """Elements saved per token by one layer's MLP block (pre-MLP norm through fc2 input)."""
    H = int(model["hidden_size"])
    moe = model.get("moe")
    # SwiGLU: fc1 output [gate; up] (2F), silu(gate), up + glu_linear_offset (a copy), the
    # product (fc2 input): 5F; plus the fc1 input.
    if not moe:
        return _norm(H) + H + 5 * int(model["ffn_hidden_size"])
    E, k, Fe = int(moe["num_experts"]), int(moe["router_topk"]), int(moe["expert_ffn_hidden_size"])
    # Router input, fp32 router logits / probabilities (~4E), then per routed copy: the
    # permuted token (expert input), the expert's SwiGLU, its output (held for unpermute).
    return _norm(H) + H + 4 * E + k * (H + 5 * Fe + H)


@dataclass(frozen=True)
class ActivationBytes:
    layers: float  # all transformer layers' saved tensors
    head: float  # final norm, output-layer input, per-token loss bookkeeping
    logits: float  # fp32 softmax saved by the cross entropy + the bf16 logits / their grad
    recompute_buffer: float  # full recompute: one layer's activations rebuilt in backward

    @property
    def total(self) -> float:
        return self.layers + self.head + self.logits + self.recompute_buffer


def activation_bytes(model: dict[str, Any], vocab_size: int, micro_batch: int, precision: str,
                     recompute: str = "none", device: str = "cuda") -> ActivationBytes:
    """Activation bytes of one micro-batch at the end of the forward pass (its peak)."""
    if recompute not in RECOMPUTES:
        raise ValueError(f"recompute must be one of {RECOMPUTES}, got {recompute!r}")
    a = RECIPES[precision].activation
    tokens = micro_batch * int(model["seq_length"])
    L, H = int(model["num_layers"]), int(model["hidden_size"])
    # Measured: torch's CPU flash kernel needs equal q/k and v head dims, so MLA falls back
    # to the math path on a CPU; CUDA's memory-efficient kernel takes MLA's shapes.
    if families.family(model) != families.GPT:
        layer = families.layer_activation_elements(model)
    else:
        # Measured too: an additive score bias (relative positions) sends torch's CPU SDPA to
        # its math path, which keeps the probabilities.
        math_kernel = device == "cpu" and (model["attention"] == "mla" or model.get("position_embedding") == "relative")
        layer = attention_elements(model, math_kernel, recompute) + mlp_elements(model)
    per_layer = H if recompute == "full" else layer  # full: only each layer's input stays
    head = _norm(H) + H + 4  # final norm, output_layer input; ids, labels, mask, loss
    # T5's relative bias: one additive [1, n, s, s] score mask for the micro-batch, every layer's
    # attention reading the same tensor (model.RelativeBiasGPTModel).
    relative_mask = (int(model["num_attention_heads"]) * int(model["seq_length"]) ** 2
                     if model.get("position_embedding") == "relative" else 0)
    # fp32 softmax (4 B) always; in bf16 the bf16 logits (forward) or their bf16 gradient
    # (backward) coexist with it.
    logit_bytes = 4 + (a if a < 4 else 0)
    return ActivationBytes(
        layers=tokens * L * per_layer * a,
        head=tokens * head * a + relative_mask * a,
        logits=tokens * vocab_size * logit_bytes,
        recompute_buffer=tokens * layer * a if recompute == "full" else 0.0,
    )


@dataclass(frozen=True)
class Estimate:
    """Predicted bytes per GPU of one training step, by component."""

    params: int
    states: dict[str, float]
    activations: ActivationBytes

    @property
    def persistent(self) -> float:
        return self.states["weights"] + self.states["grads"] + self.states["optimizer"]

    @property
    def counted(self) -> float:
        # Gradients are held through the step (accumulation keeps them across micro-batches);
        # activations are gone when optimizer.step() makes its transient fp32 copies.
        return self.persistent + max(self.activations.total, self.states["step_transient"])

    @property
    def peak(self) -> float:
        return self.counted * (1 + FRAGMENTATION) + RUNTIME_OVERHEAD_BYTES

    def as_dict(self) -> dict[str, float]:
        """Components in GB, for the dry-run report."""
        act = self.activations
        parts = {**self.states, "activations_layers": act.layers, "activations_head": act.head,
                 "logits": act.logits, "recompute_buffer": act.recompute_buffer, "counted": self.counted,
                 "peak": self.peak}
        return {k: round(v / GB, 3) for k, v in parts.items()}


def cell_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The planner's knobs of a pretraining cell's resolved settings, with their defaults."""
    t, par = settings["training"], settings.get("parallel") or {}
    return {
        "micro_batch_size": int(t["micro_batch_size"]),
        "precision": t["precision"],
        "recompute": t.get("recompute", "none"),
        "optimizer_sharding": par.get("optimizer_sharding", "none"),
        "data_parallel": int(par.get("data_parallel", 1)),
        "expert_parallel": int(par.get("expert_parallel", 1)),
        "world_size": int(par.get("world_size", 1)),
        "device": settings.get("device", "cuda"),
    }


def on_megatron(k: dict[str, Any]) -> bool:
    """Whether the knobs select megatron's stack. `device: auto` plans as CUDA: the planner
    checks GPU memory, and auto picks CUDA wherever there is a GPU to check."""
    return megatron_selected("cpu" if k["device"] == "cpu" else "cuda", k["world_size"],
                             k["optimizer_sharding"], k["expert_parallel"])


def estimate(settings: dict[str, Any], vocab_size: int, **override: Any) -> Estimate:
    """Predict one cell's memory per GPU; `override` replaces knobs of `cell_settings`."""
    k = {**cell_settings(settings), **override}
    model = settings["model"]
    n = parameter_counts(model, vocab_size)["total"]
    return Estimate(
        params=n,
        states=state_bytes(n, k["precision"], k["optimizer_sharding"], k["data_parallel"],
                           expert_parameters(model), k["expert_parallel"], on_megatron(k)),
        activations=activation_bytes(model, vocab_size, k["micro_batch_size"], k["precision"],
                                     k["recompute"], k["device"]),
    )
