"""Analytic KV-cache sizes of a decoder, and the KV budget a serving load needs.

A decoder layer caches one key and one value vector per KV head (attention group) for every
token: 2 · L · groups · head_dim · bytes per token. MHA has groups = heads, MQA one group,
GQA in between, so the same model shape holds heads/groups times more KV under MHA than GQA.
vLLM allocates that cache in blocks of ``block_size`` tokens and keeps one block back (its
null block), so a budget is whole blocks, one request at most ``max_model_len`` long.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1}


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of key + value cache one token holds across all layers."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def kv_bytes_per_token_of(hf_config: Mapping[str, Any], dtype: str) -> int:
    """:func:`kv_bytes_per_token` of a Hugging Face decoder config (config.json) at a KV dtype."""
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
