"""Exact parameter counts of the megatron-core GPT models the pretraining stage builds.

Pure arithmetic on a resolved ``settings["model"]`` dict (the shape documented in
`effbench.pretrain.model.transformer_config_from_settings`): SwiGLU MLPs, no linear biases
except optional q/k/v biases, RMSNorm weights, RoPE or no position encoding (no table) or a
learned absolute position table (seq_length x hidden), untied or tied embeddings.
tests/pretrain/test_plan_memory.py checks every count against the built model.
"""

from __future__ import annotations

from typing import Any

from . import families

# T5's relative position bias (position_embedding: relative): 32 buckets of distance, exact up to
# 16 tokens and logarithmic up to 128 (one direction: causal), one scalar per head and bucket.
RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE = 32, 128


def num_query_groups(model: dict[str, Any]) -> int:
    """KV head count: 1 for MQA, num_query_groups for GQA (and NSA, whose branches share GQA's
    key/value heads; all heads without it), the head count for MHA / MLA."""
    heads = int(model["num_attention_heads"])
    kind = model["attention"]
    groups = model.get("num_query_groups")
    if kind == "mqa":
        return 1
    if kind == "nsa":
        return int(groups) if groups else heads
    if kind == "gqa":
        if not groups or heads % int(groups):
            raise ValueError(f"gqa needs num_query_groups dividing {heads} heads, got {groups}")
        return int(groups)
    if kind == "mha" and groups is not None and int(groups) != heads:
        raise ValueError(f"mha has one KV head per query head; got num_query_groups={groups}")
    return heads


def nsa_compress_params(model: dict[str, Any]) -> int:
    """NSA's two compression MLPs (keys, values; native_sparse_attention_pytorch's, shared by the
    kv heads): block·d -> int(expand · block·d) -> d with biases, ReLU between."""
    d = int(model["hidden_size"]) // int(model["num_attention_heads"])
    bd = int(model["nsa"]["compress_block_size"]) * d
    hidden = int(float(model["nsa"]["compress_mlp_expand_factor"]) * bd)
    return 2 * (bd * hidden + hidden + hidden * d + d)


def _nsa_params(model: dict[str, Any]) -> int:
    """native_sparse_attention_pytorch.SparseAttention (norm off): q/k/v (GQA) and output
    projections without bias, the per-head gate over the three branches (with bias), learned
    memory key/value and intra-block positions for the compressed branch, the compression MLPs,
    and its rotary embedding's d/2 frequencies (a parameter, not trained)."""
    H, n = int(model["hidden_size"]), int(model["num_attention_heads"])
    d, g, b = H // n, num_query_groups(model), int(model["nsa"]["compress_block_size"])
    return (H * (n + 2 * g) * d + n * d * H + (H * 3 * n + 3 * n) + 2 * g * d + 2 * g * b * d
            + nsa_compress_params(model) + d // 2)


def nsa_attended_keys(model: dict[str, Any], seq_length: int) -> int:
    """Keys a query attends in NSA's three branches (no causal discount, as for dense attention):
    the compressed blocks of the sequence, the selected blocks, the sliding window."""
    o = model["nsa"]
    compressed = seq_length // int(o["compress_block_sliding_stride"])
    selected = min(seq_length, int(o["num_selected_blocks"]) * int(o["selection_block_size"]))
    return compressed + selected + min(seq_length, int(o["sliding_window_size"]))


def _attention_params(model: dict[str, Any]) -> int:
    H, n = int(model["hidden_size"]), int(model["num_attention_heads"])
    if model["attention"] == "nsa":
        return _nsa_params(model)
    if model["attention"] == "mla":
        m = model["mla"]
        qk, pe, v = int(m["qk_head_dim"]), int(m["qk_pos_emb_head_dim"]), int(m["v_head_dim"])
        kv_r, q_r = int(m["kv_lora_rank"]), m.get("q_lora_rank")
        if q_r is None:  # no latent norms (see transformer_config_from_settings)
            q, kv_norm = H * n * (qk + pe), 0
        else:
            q_r = int(q_r)
            q, kv_norm = H * q_r + q_r + q_r * n * (qk + pe), kv_r
        return q + H * (kv_r + pe) + kv_norm + kv_r * n * (qk + v) + n * v * H
    d = H // n
    qkv_out = (n + 2 * num_query_groups(model)) * d
    return H * qkv_out + (qkv_out if model.get("add_qkv_bias") else 0) + n * d * H


def parameter_counts(model: dict[str, Any], vocab_size: int = 0) -> dict[str, int]:
    """Parameter counts from settings alone.

    Returns total, embedding (token table + untied output layer), non_embedding,
    active_non_embedding (routed experts scaled to top-k of E) and output_projection
    (vocab x hidden, tied or not): the same keys as `pretrain.model.count_parameters`.
    A transformers family (GPT-NeoX, Mamba-2, RWKV) is counted by `plan.families`.
    """
    if families.family(model) != families.GPT:
        return families.parameter_counts(model, vocab_size)
    L, H = int(model["num_layers"]), int(model["hidden_size"])
    attn = _attention_params(model)
    moe = model.get("moe")
    if moe:
        E, k = int(moe["num_experts"]), int(moe["router_topk"])
        Fe = int(moe["expert_ffn_hidden_size"])
        mlp = E * H + E * 3 * H * Fe  # router + SwiGLU experts
        mlp_active = E * H + k * 3 * H * Fe
    else:
        mlp = mlp_active = 3 * H * int(model["ffn_hidden_size"])
    norms = 2 * H  # input + pre-MLP RMSNorm
    # T5's relative bias: one scalar per head and distance bucket, shared by the layers.
    relative = RELATIVE_BUCKETS * int(model["num_attention_heads"]) if model.get("position_embedding") == "relative" else 0
    non_emb = L * (attn + mlp + norms) + H + relative  # + final norm
    active = L * (attn + mlp_active + norms) + H + relative
    emb = vocab_size * H * (1 if model.get("tie_embeddings") else 2)
    if model.get("position_embedding") == "learned_absolute":  # megatron's embedding.position_embeddings
        emb += int(model["seq_length"]) * H
    return {
        "total": non_emb + emb,
        "embedding": emb,
        "non_embedding": non_emb,
        "active_non_embedding": active,
        "output_projection": vocab_size * H,
    }


def expert_parameters(model: dict[str, Any]) -> int:
    """Parameters of the routed experts (what expert parallelism divides; the router stays
    replicated): 0 for a dense model."""
    moe = model.get("moe")
    if not moe:
        return 0
    return int(model["num_layers"]) * int(moe["num_experts"]) * 3 * int(model["hidden_size"]) * int(
        moe["expert_ffn_hidden_size"])


def flops_per_token(
    settings: dict[str, Any], seq_length: int, vocab_size: int | None = None
) -> float:
    """Training FLOPs per token: 6 * N_active + attention term (PaLM-style MFU convention).

    N_active = active non-embedding parameters (routed experts counted top-k of E), plus
    the vocab x hidden output projection when `vocab_size` is given (it is a real matmul
    per token; including it reproduces the toolchain.md MFU figures, e.g. 25.8% for the
    Qwen2.5-0.5B shape).

    Attention term = 12 * L * H * S for MHA/MQA/GQA (QK^T and AV: 2 matmuls x 2 FLOPs x 3
    for forward+backward, no causal discount). For MLA, whose per-head qk and v dims
    differ from H/n, the same count is 6 * L * S * n * (d_qk + d_pe + d_v), which equals
    12 * L * H * S when d_qk = d_v = H/n.
    """
    counts = parameter_counts(settings, vocab_size or 0)
    n_active = counts["active_non_embedding"] + (counts["output_projection"] if vocab_size else 0)
    if families.family(settings) != families.GPT:  # its own token-mixing term (docs/pretrain-families.md)
        return float(6 * n_active + families.mixing_flops(settings, seq_length))
    L, H = int(settings["num_layers"]), int(settings["hidden_size"])
    n = int(settings["num_attention_heads"])
    if settings["attention"] == "nsa":
        # Only the attended keys (docs/pretrain-families.md); the compression MLPs run once per
        # kv head and stride, not per token: their 6·N share is replaced by that rate.
        o = settings["nsa"]
        compress = nsa_compress_params(settings)
        per_token = compress * num_query_groups(settings) / int(o["compress_block_sliding_stride"])
        attn = 12 * L * H * nsa_attended_keys(settings, seq_length) + 6 * L * (per_token - compress)
        return float(6 * n_active + attn)
    if settings["attention"] == "mla":
        m = settings["mla"]
        head_dims = int(m["qk_head_dim"]) + int(m["qk_pos_emb_head_dim"]) + int(m["v_head_dim"])
        attn = 6 * L * seq_length * n * head_dims
    else:
        attn = 12 * L * H * seq_length
    return float(6 * n_active + attn)
