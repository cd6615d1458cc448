"""Fused output projection + cross-entropy for a large vocabulary, in plain torch.

The stage's path (megatron's output layer, then its vocab-parallel cross-entropy) materialises
the [tokens, vocab] logits in bf16 and an fp32 softmax that it keeps for the backward pass:
at micro-batch 4 × 2048 tokens and Qwen2.5's 151936 words that is 2.5 GB + 5 GB. Here the
loss is taken ``chunk_rows`` tokens at a time: each chunk's logits exist only inside the
loop (fp32, chunk_rows × vocab), and the gradients with respect to the hidden states and
the weight are computed there too (as Liger's kernel does), so the backward pass only scales
them and nothing is recomputed: the same three matmuls as the unfused path.

Chunks run over tokens, not over the vocabulary: a vocabulary split needs the global
log-sum-exp before any gradient, so it would recompute every chunk's logits (a fourth
matmul). No extra wheel is needed; `liger_loss` uses liger-kernel's Triton kernel when it
imports.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean over tokens of CE(hidden @ weight.T, labels); hidden [N, H], weight [V, H], labels [N]."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                chunk_rows: int) -> torch.Tensor:
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        # Accumulated over chunks in fp32, cast once (megatron's bf16 path sums in one matmul).
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_rows):
            h = hidden[start:start + chunk_rows]
            y = labels[start:start + chunk_rows, None]
            logits = (h @ weight.t()).float()  # the only vocab-sized buffer: chunk_rows × V fp32
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            loss += (lse - logits.gather(1, y)).sum()
            # d(Σ CE)/d logits = softmax − one-hot, divided by n for the mean; in place.
            grad = logits.sub_(lse).exp_()
            grad.scatter_add_(1, y, torch.full_like(lse, -1.0))
            g = grad.mul_(1.0 / n).to(hidden.dtype)
            grad_hidden[start:start + chunk_rows] = g @ weight
            grad_weight += g.t() @ h
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_out.to(grad_hidden.dtype),
                grad_weight.mul_(grad_out).to(ctx.weight_dtype), None, None)


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                 chunk_rows: int = 2048) -> torch.Tensor:
    """The mean cross-entropy of ``hidden @ weight.T`` against ``labels`` (see the module)."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    return ChunkedLinearCrossEntropy.apply(hidden, weight, labels, chunk_rows)


def liger_loss() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """liger-kernel's fused linear cross-entropy as ``f(hidden, weight, labels)`` (mean);
    raises ImportError when liger-kernel is not installed."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    fn = LigerFusedLinearCrossEntropyLoss()  # reduction "mean", no ignore_index hits here
    return lambda hidden, weight, labels: fn(weight, hidden, labels)
