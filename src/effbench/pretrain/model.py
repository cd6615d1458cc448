"""Build megatron-core GPT models (MHA / MQA / GQA / MLA, dense or MoE) from resolved settings.

The settings dict is the resolved model section of the user config (see
`transformer_config_from_settings` for the keys). Requires `parallel.init_single_process()`
to have run (megatron needs its parallel state and RNG tracker to build layers).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

from effbench.plan.params import RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE, num_query_groups
from effbench.plan.params import flops_per_token  # noqa: F401 - re-exported (train.py imports it from here)
from effbench.plan.params import parameter_counts as analytic_parameter_counts
from effbench.pretrain.compat_cpu import apply_cpu_compat, apply_missing_te_fixes
from effbench.pretrain.sdpa_attention import SDPAttention

ATTENTION_KINDS = ("mha", "mqa", "gqa", "mla", "nsa")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _have_transformer_engine() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return False
    return True


def uses_transformer_engine(device: str | torch.device) -> bool:
    """TE layer spec only on GPU and only when transformer_engine imports."""
    return torch.device(device).type == "cuda" and _have_transformer_engine()


def uses_grouped_gemm(device: str | torch.device) -> bool:
    """MoE experts as one grouped GEMM (megatron's ``moe_grouped_gemm``) on GPU when a kernel is
    installed: TE's TEGroupedMLP, or the grouped_gemm package behind megatron's GroupedMLP on the
    local spec. Otherwise SequentialMLP (one GEMM per expert; the same parameters and arithmetic,
    laid out per expert instead of stacked)."""
    if torch.device(device).type != "cuda":
        return False
    from megatron.core.transformer.moe.grouped_gemm_util import grouped_gemm_is_available

    return _have_transformer_engine() or grouped_gemm_is_available()


# megatron-core's position_embedding_type per `position_embedding` setting; "sinusoidal" is
# megatron's absolute-position slot holding Vaswani et al.'s fixed table (`SinusoidalPositions`),
# "relative" T5's bucketed bias on the attention scores (`RelativeBiasGPTModel`).
POSITION_EMBEDDINGS = ("rope", "learned_absolute", "sinusoidal", "relative", "none")


class RelativeBiasGPTModel(GPTModel):
    """GPTModel with T5's relative position bias (Raffel et al. 2020): megatron-core's own
    `RelativePositionEmbedding` (causal, so one direction), one learned scalar per head and
    distance bucket, shared by every layer (as T5 shares it) and added to the attention scores.
    The forward builds the additive mask once, bias plus causal -inf, and hands it to every
    layer's core attention through megatron's `attention_bias`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from megatron.core.models.common.embeddings.relative_pos_embedding import RelativePositionEmbedding

        self.relative_position = RelativePositionEmbedding(
            bidirectional=False, init_method=self.config.init_method,
            num_attention_heads=self.config.num_attention_heads,
            relative_attention_num_buckets=RELATIVE_BUCKETS, relative_attention_max_distance=RELATIVE_MAX_DISTANCE)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                *args: Any, extra_block_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        if attention_mask is not None:
            raise NotImplementedError("the relative bias builds its own causal mask; pass attention_mask=None")
        s = input_ids.size(1)
        bias = self.relative_position(s, s).to(self.config.params_dtype)  # [1, n, s, s]
        future = torch.ones(s, s, dtype=torch.bool, device=bias.device).triu(1)
        scores_bias = bias.masked_fill(future, float("-inf"))
        return super().forward(input_ids, position_ids, attention_mask, *args,
                               extra_block_kwargs={**(extra_block_kwargs or {}), "attention_bias": scores_bias},
                               **kwargs)


class SinusoidalPositions(torch.nn.Module):
    """The fixed sinusoidal encoding (Vaswani et al. 2017): PE[p, 2i] = sin(p / 10000^(2i/H)),
    PE[p, 2i+1] = cos(p / 10000^(2i/H)), added to the token embeddings. A buffer, not a parameter:
    nothing to train, count or save.

    Scaled by `scale`, the token embeddings' init std: Vaswani et al. multiply the embeddings by
    √H (unit variance) against the table's RMS of 1/√2; megatron leaves them at init_method_std
    (0.02), under which the unscaled table drowned the tokens (the xs cell reached PPL 174
    against RoPE's 4.9). Scaled, position and token keep Vaswani et al.'s ratio."""

    def __init__(self, positions: int, hidden: int, dtype: torch.dtype, scale: float = 1.0) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"the sinusoidal encoding pairs sin and cos: hidden_size {hidden} must be even")
        angle = torch.arange(positions, dtype=torch.float64)[:, None] / 10000.0 ** (
            torch.arange(0, hidden, 2, dtype=torch.float64) / hidden)
        table = torch.stack((angle.sin(), angle.cos()), dim=-1).reshape(positions, hidden) * scale
        self.register_buffer("table", table.to(dtype), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(position_ids, self.table)


def transformer_config_from_settings(
    settings: dict[str, Any], device: str | torch.device = "cpu"
) -> TransformerConfig:
    """Map resolved model settings to a (MLA)TransformerConfig.

    Keys: num_layers, hidden_size, num_attention_heads, ffn_hidden_size, seq_length,
    attention (mha|mqa|gqa|mla), num_query_groups, add_qkv_bias, rotary_base,
    normalization, norm_epsilon, tie_embeddings, init_method_std, params_dtype,
    expert_parallel (default 1), mla (None | {q_lora_rank, kv_lora_rank, qk_head_dim, qk_pos_emb_head_dim, v_head_dim}),
    moe (None | {num_experts, router_topk, aux_loss_coeff, expert_ffn_hidden_size}).
    """
    kind = settings["attention"]
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
    on_cpu = torch.device(device).type == "cpu"
    dtype = _DTYPES[settings.get("params_dtype", "float32")]
    if on_cpu and dtype != torch.float32:
        raise ValueError("params_dtype bfloat16 is only supported on GPU")

    kwargs: dict[str, Any] = dict(
        num_layers=int(settings["num_layers"]),
        hidden_size=int(settings["hidden_size"]),
        num_attention_heads=int(settings["num_attention_heads"]),
        ffn_hidden_size=int(settings["ffn_hidden_size"]),
        num_query_groups=num_query_groups(settings),
        add_qkv_bias=bool(settings["add_qkv_bias"]),
        add_bias_linear=False,
        gated_linear_unit=True,  # SwiGLU: linear_fc1 = [gate; up], silu(gate) * up
        activation_func=F.silu,
        bias_activation_fusion=False,
        normalization=settings["normalization"],
        layernorm_epsilon=float(settings["norm_epsilon"]),
        init_method_std=float(settings["init_method_std"]),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        use_cpu_initialization=on_cpu,
        # megatron >= 0.19 builds some MLA norms from this backend rather than the spec.
        transformer_impl="transformer_engine" if uses_transformer_engine(device) else "local",
        # These fusions need CUDA kernels (or TE); keep them off everywhere for parity.
        masked_softmax_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
    )
    moe = settings.get("moe")
    if moe:
        kwargs.update(
            num_moe_experts=int(moe["num_experts"]),
            moe_router_topk=int(moe["router_topk"]),
            moe_aux_loss_coeff=float(moe["aux_loss_coeff"]),
            moe_ffn_hidden_size=int(moe["expert_ffn_hidden_size"]),
            moe_router_load_balancing_type="aux_loss",
            # allgather works over gloo (CPU); with EP = 1 both dispatchers are local
            # permutations, and alltoall is what the GPU reference timings used.
            moe_token_dispatcher_type="allgather" if on_cpu else "alltoall",
            moe_grouped_gemm=uses_grouped_gemm(device),
            expert_model_parallel_size=int(settings.get("expert_parallel", 1)),
            moe_router_dtype="fp32",
        )
    if kind == "mla":
        mla = settings["mla"]
        return MLATransformerConfig(
            **kwargs,
            multi_latent_attention=True,
            q_lora_rank=None if mla.get("q_lora_rank") is None else int(mla["q_lora_rank"]),
            kv_lora_rank=int(mla["kv_lora_rank"]),
            qk_head_dim=int(mla["qk_head_dim"]),
            qk_pos_emb_head_dim=int(mla["qk_pos_emb_head_dim"]),
            v_head_dim=int(mla["v_head_dim"]),
            # RMSNorm on the compressed q / kv latents (DeepSeek-V2) only with q-LoRA:
            # megatron-core 0.19 rejects latent norms when q_lora_rank is None (its Q norm
            # then needs a TE-fused norm+linear), so both versions build the same model.
            qk_layernorm=mla.get("q_lora_rank") is not None,
            rope_type="rope",
            rotary_base=float(settings["rotary_base"]),
            rotary_scaling_factor=1.0,  # plain RoPE: mscale = 1, scale = 1/sqrt(qk+pe dim)
        )
    return TransformerConfig(**kwargs)


def layer_spec(config: TransformerConfig, device: str | torch.device, nsa: dict[str, Any] | None = None) -> ModuleSpec:
    """TE spec on GPU when transformer_engine imports; otherwise the local spec with SDPA. With
    `nsa`, native sparse attention replaces the whole self-attention (`nsa_attention.py`)."""
    moe_kwargs = dict(
        num_experts=config.num_moe_experts,
        moe_grouped_gemm=bool(config.moe_grouped_gemm),
        qk_layernorm=bool(config.qk_layernorm),
        multi_latent_attention=bool(config.multi_latent_attention),
    )
    if nsa is not None:
        from .nsa_attention import NSASelfAttention

        spec = get_gpt_layer_local_spec(**moe_kwargs, normalization=config.normalization)
        spec.submodules.self_attention = ModuleSpec(module=NSASelfAttention, params={"nsa": nsa})
        return spec
    if uses_transformer_engine(device):
        return get_gpt_layer_with_transformer_engine_spec(**moe_kwargs)
    spec = get_gpt_layer_local_spec(**moe_kwargs, normalization=config.normalization)
    # The local DotProductAttention materialises [b, n, s, s] scores; SDPA does not.
    spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec


def build_gpt_model(settings: dict[str, Any], vocab_size: int, device: str) -> GPTModel:
    """Build a megatron GPTModel on `device` ("cpu" or "cuda[:i]") from resolved settings."""
    dev = torch.device(device)
    if dev.type == "cpu":
        apply_cpu_compat()
    apply_missing_te_fixes()  # no-op with TE or on megatron-core versions that fixed it
    config = transformer_config_from_settings(settings, dev)
    position = settings.get("position_embedding", "rope")
    if position not in POSITION_EMBEDDINGS:
        raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, got {position!r}")
    model = (RelativeBiasGPTModel if position == "relative" else GPTModel)(
        config=config,
        transformer_layer_spec=layer_spec(config, dev, settings.get("nsa") if settings["attention"] == "nsa" else None),
        vocab_size=int(vocab_size),
        max_sequence_length=int(settings["seq_length"]),
        pre_process=True,
        post_process=True,
        share_embeddings_and_output_weights=bool(settings["tie_embeddings"]),
        # MLA applies its own decoupled RoPE whatever this says (the config allows rope only there).
        # NSA rotates its own queries and keys (its rotary embedding), so megatron builds none.
        position_embedding_type="none" if settings["attention"] == "nsa" else
        {"sinusoidal": "learned_absolute", "relative": "none"}.get(position, position),
        rotary_base=float(settings["rotary_base"]),
    )
    if position == "sinusoidal":  # megatron's embedding adds position_embeddings(position_ids)
        model.embedding.position_embeddings = SinusoidalPositions(
            int(settings["seq_length"]), int(settings["hidden_size"]), config.params_dtype,
            scale=float(settings["init_method_std"]))
    return model.to(dev)


# ---------------------------------------------------------------------------------------
# Parameter and FLOP accounting
# ---------------------------------------------------------------------------------------


def _is_expert_param(name: str) -> bool:
    # SequentialMLP: "...mlp.experts.local_experts.<i>.linear_fc1.weight";
    # grouped variants: "...mlp.experts.linear_fc1.weight<i>" / "...mlp.experts.weight1".
    return ".mlp.experts." in name


def _is_embedding_param(name: str) -> bool:
    return name.startswith("embedding.") or name.startswith("output_layer.")


def count_parameters(model: torch.nn.Module, settings: dict[str, Any]) -> dict[str, int]:
    """Count a built model's parameters (shared tensors counted once).

    Returns:
      total: all unique parameters.
      embedding: the token-embedding table plus the untied output layer (0 extra if tied).
      non_embedding: total - embedding (transformer layers, router, norms).
      active_non_embedding: non_embedding with routed experts scaled to the top-k used
        per token (experts have identical shapes, so the scaling is exact).
      output_projection: vocab x hidden, the output-logits matmul weights, whether tied or
        not (needed for FLOPs; see flops_per_token).
    """
    seen: set[int] = set()
    total = embedding = experts = 0
    out_proj = 0
    for name, p in model.named_parameters():
        if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
            out_proj = p.numel()  # same V x H either way
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        total += n
        if _is_embedding_param(name):
            embedding += n
        elif _is_expert_param(name):
            experts += n
    non_embedding = total - embedding
    active = non_embedding
    moe = settings.get("moe")
    if moe:
        active = non_embedding - experts + experts * int(moe["router_topk"]) // int(
            moe["num_experts"]
        )
    return {
        "total": total,
        "embedding": embedding,
        "non_embedding": non_embedding,
        "active_non_embedding": active,
        "output_projection": out_proj,
    }
