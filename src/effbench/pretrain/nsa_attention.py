"""Native sparse attention (Yuan et al. 2025, "NSA") as the self-attention of megatron's GPT
layer: `native_sparse_attention_pytorch.SparseAttention` (pure PyTorch, its reference path on
every device; the package's Triton kernel is not used), behind the interface megatron's
TransformerLayer calls.

Each query attends three ways and mixes them with a learned per-head gate: compressed blocks of
the whole past (an MLP compresses each `compress_block_size` window, every
`compress_block_sliding_stride` tokens), the `num_selected_blocks` blocks of `selection_block_size`
tokens the compressed scores rank highest, and a sliding window of `sliding_window_size`. The
module brings its own rotary embedding (megatron's is not built for these cells) and GQA.
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig


class NSASelfAttention(MegatronModule):
    """[s, b, h] -> ([s, b, h], None): megatron's self-attention contract (output, bias)."""

    def __init__(self, config: TransformerConfig, layer_number: int, nsa: dict[str, Any] | None = None,
                 **_: Any) -> None:
        super().__init__(config=config)
        from native_sparse_attention_pytorch import SparseAttention

        if nsa is None:
            raise ValueError("NSASelfAttention needs its settings (model.nsa)")
        heads = config.num_attention_heads
        self.layer_number = layer_number
        self.attention = SparseAttention(
            dim=config.hidden_size, dim_head=config.hidden_size // heads, heads=heads,
            kv_heads=config.num_query_groups or heads,
            sliding_window_size=int(nsa["sliding_window_size"]),
            compress_block_size=int(nsa["compress_block_size"]),
            compress_block_sliding_stride=int(nsa["compress_block_sliding_stride"]),
            selection_block_size=int(nsa["selection_block_size"]),
            num_selected_blocks=int(nsa["num_selected_blocks"]),
            compress_mlp_expand_factor=float(nsa["compress_mlp_expand_factor"]),
            causal=True, norm=False,  # megatron's input_layernorm already normalised the input
            use_triton_kernel=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        # Causal by construction; megatron's rotary embedding and masks are not used here.
        out = self.attention(hidden_states.transpose(0, 1))
        return out.transpose(0, 1).contiguous(), None
