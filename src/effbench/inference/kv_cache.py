"""Analytic KV-cache sizes of a decoder, and the KV budget a serving load needs.

A decoder layer caches one key and one value vector per KV head (attention group) for every
token: 2 · L · groups · head_dim · bytes per token. MHA has groups = heads, MQA one group,
GQA in between, so the same model shape holds heads/groups times more KV under MHA than GQA.
A mixture of experts changes the MLP only: its attention caches as its dense layout does.
MLA (DeepSeek-V2/V3: ``kv_lora_rank`` in the config) caches one compressed latent of
``kv_lora_rank`` and the shared RoPE key of ``qk_rope_head_dim`` per token and layer, no
per-head K and V (the engine re-expands them through ``kv_b_proj``, or absorbs it):
L · (kv_lora_rank + qk_rope_head_dim) · bytes per token.
The cache's element type is the model's dtype unless vLLM's ``kv_cache_dtype`` says fp8
(``fp8`` / ``fp8_e4m3`` / ``fp8_e5m2``, all of which its CPU attention backend lists among
its supported KV dtypes): 1 byte per element (:func:`kv_dtype`).
vLLM allocates that cache in blocks of ``block_size`` tokens and keeps one block back (its
null block), so a budget is whole blocks, one request at most ``max_model_len`` long.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1,
               "fp8_e4m3": 1, "fp8_e5m2": 1}
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")  # vLLM's kv_cache_dtype values used here


def kv_dtype(kv_cache_dtype: str | None, model_dtype: str) -> str:
    """The dtype the KV cache is held in: vLLM's ``kv_cache_dtype``, ``auto`` meaning the model's."""
    if kv_cache_dtype in (None, "auto"):
        return model_dtype
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(f"unknown kv_cache_dtype {kv_cache_dtype!r}: one of {', '.join(KV_CACHE_DTYPES)}")
    return kv_cache_dtype


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of key + value cache one token holds across all layers."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def kv_bytes_per_token_mla(num_layers: int, kv_lora_rank: int, qk_rope_head_dim: int, dtype_bytes: int) -> int:
    """Bytes of MLA cache one token holds across all layers: the latent and the RoPE key."""
    return num_layers * (kv_lora_rank + qk_rope_head_dim) * dtype_bytes


def kv_bytes_per_token_of(hf_config: Mapping[str, Any], dtype: str) -> int:
    """KV bytes per token of a Hugging Face decoder config (config.json) at a KV dtype:
    :func:`kv_bytes_per_token_mla` for MLA, else :func:`kv_bytes_per_token` (dense and MoE)."""
    hf_config = hf_config.get("text_config") or hf_config
    if hf_config.get("kv_lora_rank") is not None:
        return kv_bytes_per_token_mla(int(hf_config["num_hidden_layers"]), int(hf_config["kv_lora_rank"]),
                                      int(hf_config["qk_rope_head_dim"]), DTYPE_BYTES[dtype])
    heads = int(hf_config["num_attention_heads"])
    head_dim = hf_config.get("head_dim") or int(hf_config["hidden_size"]) // heads
    return kv_bytes_per_token(int(hf_config["num_hidden_layers"]), int(hf_config.get("num_key_value_heads") or heads),
                              int(head_dim), DTYPE_BYTES[dtype])


def kv_budget_bytes(bytes_per_token: int, loads: list[tuple[int, int]], block_size: int, max_model_len: int,
                    headroom: float = 1.0) -> int:
    """KV bytes that hold every load of ``loads`` — (sequences in flight, tokens per sequence) —
    in whole blocks, plus vLLM's null block; never less than one ``max_model_len`` request
    (vLLM refuses to start otherwise). ``headroom`` ≥ 1 scales the block count up."""
    blocks = max([seqs * math.ceil(tokens / block_size) for seqs, tokens in loads]
                 + [math.ceil(max_model_len / block_size)])
    return (math.ceil(blocks * headroom) + 1) * block_size * bytes_per_token
