"""Parameter counts and KV-cache bytes of a decoder-only model from its Hugging Face config.json
(Llama, Qwen2, Mistral, Phi-3, Yi: the families of config/paper.yaml), or of a pipeline export
from its settings. Biases and norms are counted where they are large enough to matter (norms,
q/k/v biases are left out: under 0.1 % of these models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..plan.params import num_query_groups, parameter_counts


@dataclass(frozen=True)
class Shape:
    total: int  # parameters
    embedding: int  # token table + untied output layer
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    linear_in_out: tuple[tuple[int, int], ...]  # (in, out) of each linear layer of one block

    @property
    def linear(self) -> int:
        return self.total - self.embedding

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def from_hf_config(c: dict[str, Any]) -> Shape:
    """Shape of a dense decoder from config.json; ValueError for a shape it does not know (MoE)."""
    if any(c.get(k) for k in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise ValueError("mixture-of-experts configs are not modelled here")
    c = c.get("text_config", c)
    H, L, n = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["num_attention_heads"])
    g = int(c.get("num_key_value_heads") or n)
    d = int(c.get("head_dim") or H // n)
    F, V = int(c["intermediate_size"]), int(c["vocab_size"])
    linears = ((H, n * d), (H, g * d), (H, g * d), (n * d, H), (H, F), (H, F), (F, H))
    emb = V * H * (1 if c.get("tie_word_embeddings", False) else 2)
    per_layer = sum(i * o for i, o in linears) + 2 * H
    return Shape(L * per_layer + H + emb, emb, L, H, g, d, linears)


def from_settings(model: dict[str, Any], vocab_size: int) -> Shape:
    """Shape of a pipeline export (megatron settings), through the planner's exact counts."""
    counts = parameter_counts(model, vocab_size)
    H, n = int(model["hidden_size"]), int(model["num_attention_heads"])
    d = H // n
    g = num_query_groups(model)
    F = int(model.get("ffn_hidden_size") or 4 * H)
    linears = ((H, (n + 2 * g) * d), (n * d, H), (H, 2 * F), (F, H))
    return Shape(counts["total"], counts["embedding"], int(model["num_layers"]), H, g, d, linears)
