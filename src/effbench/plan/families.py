"""Parameter counts, FLOPs and memory terms of the pretraining families that are not megatron's
GPT: GPT-NeoX (Pythia), Mamba-2 and RWKV(-4), built from Hugging Face transformers' classes.

Pure arithmetic on a resolved ``settings["model"]`` dict (no torch): the DAG build plans these
cells from the driver. tests/pretrain/test_families.py checks every count against the
instantiated transformers model; docs/pretrain-families.md derives the FLOPs.
"""

from __future__ import annotations

from typing import Any

GPT = "gpt"  # megatron-core's GPTModel: MHA / MQA / GQA / MLA, dense or MoE (plan.params)
HF_FAMILIES = ("gpt_neox", "mamba2", "rwkv")
FAMILIES = (GPT, *HF_FAMILIES)
# The option block each family takes (a block given to another family is refused at DAG build).
OPTION_BLOCKS = {"gpt": ("mla", "moe", "nsa"), "gpt_neox": ("gpt_neox",), "mamba2": ("mamba2",), "rwkv": ()}
# Model keys only megatron's GPT reads: set on a technique of another family, they are refused.
GPT_ONLY_KEYS = ("attention", "num_query_groups", "add_qkv_bias", "position_embedding", "normalization",
                 "rotary_base", "mla", "moe", "nsa")
# Keys each family needs beyond the shared num_layers, hidden_size, seq_length, norm_epsilon,
# tie_embeddings and init_method_std.
FAMILY_KEYS = {"gpt_neox": ("num_attention_heads", "ffn_hidden_size", "rotary_base"),
               "mamba2": (), "rwkv": ("ffn_hidden_size",)}


def family(model: dict[str, Any]) -> str:
    return str(model.get("family") or GPT)


def mamba2_dims(model: dict[str, Any]) -> dict[str, int]:
    """Mamba-2's inner sizes: I = expand × H channels in `heads` heads of head_dim, G groups of
    B and C with state size N, a causal conv over I + 2GN channels of width K."""
    H, o = int(model["hidden_size"]), model["mamba2"]
    inner = int(o["expand"]) * H
    heads = inner // int(o["head_dim"])
    G, N, K = int(o["n_groups"]), int(o["state_size"]), int(o["conv_kernel"])
    return {"inner": inner, "heads": heads, "groups": G, "state": N, "conv": K, "conv_dim": inner + 2 * G * N,
            "in_proj": 2 * inner + 2 * G * N + heads}


def _layer_params(model: dict[str, Any]) -> int:
    H, fam = int(model["hidden_size"]), family(model)
    if fam == "gpt_neox":  # LayerNorms with bias; every linear has a bias
        F = int(model["ffn_hidden_size"])
        return 2 * 2 * H + (3 * H * H + 3 * H) + (H * H + H) + (H * F + F) + (F * H + H)
    if fam == "mamba2":
        d = mamba2_dims(model)
        return (H  # pre-mixer RMSNorm
                + H * d["in_proj"]  # in_proj [z, xBC, dt], no bias
                + d["conv_dim"] * d["conv"] + d["conv_dim"]  # depthwise conv1d with bias
                + 3 * d["heads"]  # dt_bias, A_log, D: one per head
                + d["inner"]  # gated RMSNorm before out_proj
                + d["inner"] * H)  # out_proj
    if fam == "rwkv":  # attention_hidden_size = hidden_size
        F = int(model["ffn_hidden_size"])
        time_mix = 2 * H + 3 * H + 4 * H * H  # time_decay, time_first, 3 mixes; key, value, receptance, output
        channel_mix = 2 * H + H * F + H * H + F * H  # 2 mixes; key, receptance, value
        return 2 * 2 * H + time_mix + channel_mix  # ln1, ln2 (LayerNorm with bias)
    raise ValueError(f"not a transformers family: {fam!r}")


def parameter_counts(model: dict[str, Any], vocab_size: int = 0) -> dict[str, int]:
    """The keys of `plan.params.parameter_counts` (no experts: active = non-embedding)."""
    L, H = int(model["num_layers"]), int(model["hidden_size"])
    fam = family(model)
    final_norm = {"gpt_neox": 2 * H, "mamba2": H, "rwkv": 2 * H}[fam]
    non_emb = L * _layer_params(model) + final_norm
    if fam == "rwkv":
        non_emb += 2 * H  # block 0's extra LayerNorm on the embeddings (pre_ln)
    emb = vocab_size * H * (1 if model.get("tie_embeddings") else 2)
    return {"total": non_emb + emb, "embedding": emb, "non_embedding": non_emb,
            "active_non_embedding": non_emb, "output_projection": vocab_size * H}


def mixing_flops(model: dict[str, Any], seq_length: int) -> float:
    """Training FLOPs per token of the token-mixing step that is not a weight matmul (forward
    counted by hand, backward twice the forward, as for the attention term 12·L·H·S):
    - gpt_neox: QKᵀ and AV over the sequence, 12·L·H·S (as megatron's MHA);
    - mamba2: the SSM recurrence per channel and state element: decay h (1 mult), input
      outer product (1 mult), accumulate (1 add), read-out C·h (1 mult + 1 add): 5·I·N, plus
      the skip D·x and dt·x (3·I); ×3 → 15·L·I·N + 9·L·I, independent of S;
    - rwkv: the WKV recurrence per channel: 9 for the output (2 mult-add pairs, the shift
      subtractions, one division) and 8 for the state update (exp and max not counted):
      17·A forward; ×3 → 51·L·H, independent of S.
    """
    L, H, fam = int(model["num_layers"]), int(model["hidden_size"]), family(model)
    if fam == "gpt_neox":
        return float(12 * L * H * seq_length)
    if fam == "mamba2":
        d = mamba2_dims(model)
        return float(15 * L * d["inner"] * d["state"] + 9 * L * d["inner"])
    if fam == "rwkv":
        return float(51 * L * H)
    raise ValueError(f"not a transformers family: {fam!r}")


def recurrent_state_elements(model: dict[str, Any]) -> int:
    """Elements of the per-sequence state an attention-free model carries instead of a KV cache
    (0 for gpt_neox, which caches K and V per token): Mamba-2's SSM state (heads × head_dim × N)
    and conv window ((K-1) × conv channels) per layer; RWKV's 3 WKV accumulators plus the two
    token-shift vectors per channel per layer."""
    L, fam = int(model["num_layers"]), family(model)
    if fam == "mamba2":
        d = mamba2_dims(model)
        return L * (d["inner"] * d["state"] + (d["conv"] - 1) * d["conv_dim"])
    if fam == "rwkv":
        return L * 5 * int(model["hidden_size"])
    return 0


def layer_activation_elements(model: dict[str, Any]) -> float:
    """Elements per token one layer saves for backward on the GPU kernels' path (fused
    attention / mamba_ssm's chunked scan / the RWKV CUDA kernel): the inputs of every linear
    and norm, the activation function's input, and the mixing kernel's own saved outputs.
    A model, not a measurement: no GPU has checked it (docs/pretrain-families.md)."""
    H, fam = int(model["hidden_size"]), family(model)
    norm = 2 * H + 2  # LayerNorm / RMSNorm: input, normalised output, mean and rstd
    if fam == "gpt_neox":
        F = int(model["ffn_hidden_size"])
        # qkv input, qkv output, attention output (dense input), log-sum-exp per head; fc_in
        # input, its output (GELU input), fc_out input
        return 2 * norm + H + 3 * H + H + int(model["num_attention_heads"]) + H + F + F
    if fam == "mamba2":
        d = mamba2_dims(model)
        # in_proj input, its output, conv output (SiLU input and output), dt, scan output, gated
        # norm input and gate, out_proj input; and the SSM state the chunked scan keeps at every
        # chunk boundary (heads × head_dim × N per chunk: I·N / chunk_size per token).
        chunk_states = d["inner"] * d["state"] / int(model["mamba2"]["chunk_size"])
        return (norm + H + d["in_proj"] + 2 * d["conv_dim"] + d["heads"] + d["inner"] + 2 * d["inner"] + d["inner"]
                + chunk_states)
    if fam == "rwkv":
        F = int(model["ffn_hidden_size"])
        # time mix: 3 mixed inputs, k, v, r, wkv output, output input; channel mix: 2 mixed
        # inputs, key output (relu² input), value input, receptance output. The WKV kernel's
        # backward recomputes its recurrent state (3 accumulators per channel) from k and v.
        return 2 * norm + 3 * H + 3 * H + H + H + 2 * H + F + F + H
    raise ValueError(f"not a transformers family: {fam!r}")
