"""Optimizer state: ZeRO-1 sharding on the torch path, and how many bytes of it a rank holds.

On CUDA a sharded cell runs megatron-core's distributed optimizer (`megatron_stack`), whose
gradient buffers megatron allocates on the GPU. On a CPU (gloo) the same ZeRO-1 arithmetic is
torch's ZeroRedundancyOptimizer: every rank keeps the AdamW moments of its share of the
parameters (whole tensors, balanced by size), steps them with the all-reduced gradients, and
broadcasts the updated tensors to the other ranks.
"""

from __future__ import annotations

from typing import Any

import torch

from .mixed_precision import MasterWeightAdamW


def zero_adamw(groups: list[dict[str, Any]], *, lr: float, betas: tuple[float, float]) -> Any:
    """AdamW whose state is sharded over the data-parallel ranks (ZeRO-1), fp32 parameters."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=lr, betas=betas)


def is_zero(opt: Any) -> bool:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return isinstance(opt, ZeroRedundancyOptimizer)


def _tensor_bytes(optim: torch.optim.Optimizer, with_params: bool) -> int:
    """Bytes of an optimizer's state tensors (moments; scalar step counters left out) and, with
    ``with_params``, of the parameters it steps (fp32 masters)."""
    seen: set[int] = set()
    total = 0
    for group in optim.param_groups:
        for p in group["params"]:
            tensors = [*optim.state.get(p, {}).values(), *([p] if with_params else [])]
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.dim() > 0 and id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
    return total


def state_bytes(opt: Any) -> int:
    """Bytes of optimizer state this rank holds: AdamW moments, plus fp32 master weights where the
    optimizer keeps its own (bf16 models). After the first step (AdamW makes its state lazily)."""
    if isinstance(opt, MasterWeightAdamW):
        return _tensor_bytes(opt.optimizer, with_params=True)
    if is_zero(opt):
        return _tensor_bytes(opt.optim, with_params=False)  # this rank's shard
    if isinstance(opt, torch.optim.Optimizer):
        return _tensor_bytes(opt, with_params=False)
    return _tensor_bytes_megatron(opt)


def _tensor_bytes_megatron(opt: Any) -> int:
    """megatron's (chained) optimizers: the inner torch Adam steps fp32 masters (the rank's shard
    of them under the distributed optimizer)."""
    return sum(_tensor_bytes(o.optimizer, with_params=True) for o in getattr(opt, "chained_optimizers", [opt]))


def gathered_state_bytes(opt: Any) -> list[int]:
    """`state_bytes` of every rank, in rank order (a collective: every rank calls it)."""
    import torch.distributed as dist

    mine = state_bytes(opt)
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return [int(x) for x in out]


def full_state_dict(opt: Any) -> dict[str, Any] | None:
    """The whole optimizer state for a resume checkpoint written by rank 0. ZeRO gathers its
    shards there first (a collective: every rank calls it; the others get None)."""
    import torch.distributed as dist

    if not is_zero(opt):
        return opt.state_dict()
    opt.consolidate_state_dict(to=0)
    return opt.state_dict() if dist.get_rank() == 0 else None
