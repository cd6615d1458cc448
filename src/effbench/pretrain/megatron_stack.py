"""megatron-core's own data-parallel training stack on CUDA: its DistributedDataParallel (gradient
buffers, reduce overlapped with the backward pass) and `get_megatron_optimizer` (bf16 model
weights over fp32 master weights, AdamW, gradient clipping in fp32; with
``optimizer_sharding: optimizer`` the distributed optimizer, ZeRO-1: each data-parallel rank
keeps the masters and moments of its 1/DP slice of the gradient buffer, gradients are
reduce-scattered and the updated weights all-gathered). Expert parameters get their own
optimizer over the expert-data-parallel group (megatron chains the two).

Used for a cell on CUDA whose layout shards the optimizer or splits experts
(`uses_megatron_stack`); the rest keep the torch DDP + `MasterWeightAdamW` path. The configs are
plain dataclasses, built and checked on a CPU by tests/pretrain/test_megatron_stack.py; the
wrapping itself needs CUDA (megatron allocates its gradient buffers there) and has not been run
on a GPU in this repository yet (docs/pretraining-parallel.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..plan.stack import uses_megatron_stack  # noqa: F401  (the memory planner decides with it too)


def ddp_config(settings: dict[str, Any]) -> Any:
    """megatron's DistributedDataParallelConfig for a cell: gradients reduced in fp32 (as torch DDP
    + MasterWeightAdamW sums them), overlapped with the backward pass, sharded when asked."""
    from megatron.core.distributed import DistributedDataParallelConfig

    sharded = settings["parallel"].get("optimizer_sharding", "none") != "none"
    return DistributedDataParallelConfig(
        grad_reduce_in_fp32=settings["training"]["precision"] == "bf16",
        overlap_grad_reduce=True,
        use_distributed_optimizer=sharded,
        # The weight all-gather after the step is not overlapped with the next forward: that
        # needs megatron's forward pre-hooks, which its own training loop drives.
        overlap_param_gather=False,
        average_in_collective=True,
    )


def optimizer_config(settings: dict[str, Any]) -> Any:
    """megatron's OptimizerConfig with the paper's recipe: AdamW, bf16 weights over fp32 masters,
    clipping on the fp32 gradients; no loss scaling (bf16)."""
    from megatron.core.optimizer import OptimizerConfig

    t = settings["training"]
    bf16 = t["precision"] == "bf16"
    return OptimizerConfig(
        optimizer="adam",  # megatron's adam is AdamW (decoupled_weight_decay=True)
        lr=float(t["lr"]),
        min_lr=float(t["min_lr"]),
        weight_decay=float(t["weight_decay"]),
        adam_beta1=float(t["adam_beta1"]),
        adam_beta2=float(t["adam_beta2"]),
        clip_grad=float(t["clip_grad"]),
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        main_params_dtype=torch.float32,
        use_distributed_optimizer=settings["parallel"].get("optimizer_sharding", "none") != "none",
    )


def wrap(model: torch.nn.Module, settings: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    """(megatron DDP around the model, megatron optimizer over it). CUDA only."""
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.optimizer import get_megatron_optimizer

    ddp = DistributedDataParallel(config=model.config, ddp_config=ddp_config(settings), module=model)
    return ddp, get_megatron_optimizer(optimizer_config(settings), [ddp])


def set_schedule(opt: Any, lr: float, weight_decay: float) -> None:
    """This step's learning rate and weight decay on every param group. megatron's groups carry
    lr_mult / wd_mult (wd_mult 0 for norms and biases) and no weight_decay of their own (its
    scheduler sets it each step); torch's groups carry their weight decay already."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
        if "wd_mult" in g:
            g["weight_decay"] = weight_decay * g["wd_mult"]


def step(ddp: torch.nn.Module, opt: Any) -> None:
    """Finish the overlapped gradient reduction, then clip and step (megatron's optimizer)."""
    ddp.finish_grad_sync()
    ok, _, _ = opt.step()
    if not ok:  # bf16 has no loss scaler: only a non-finite gradient skips a step
        raise RuntimeError("megatron's optimizer skipped the step (non-finite gradients)")


def zero_grad(ddp: torch.nn.Module, opt: Any) -> None:
    ddp.zero_grad_buffer()
    opt.zero_grad()


def save_optimizer(opt: Any, path: Path, sharded: bool) -> dict[str, Any]:
    """The optimizer's checkpoint: its state dict (returned; unsharded, it holds the masters and
    moments too); sharded, the masters and moments are gathered to data-parallel rank 0 into
    ``path`` (a collective: every rank calls it)."""
    if sharded:
        opt.save_parameter_state(str(path))
    return opt.state_dict()


def load_optimizer(opt: Any, state: dict[str, Any], path: Path, sharded: bool) -> None:
    """Inverse of `save_optimizer` (every rank calls it; rank 0 reads ``path`` and scatters)."""
    opt.load_state_dict(state)
    if sharded:
        opt.load_parameter_state(str(path))
