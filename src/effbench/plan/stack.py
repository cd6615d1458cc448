"""Which training stack a pretraining cell runs on, decided from its settings alone (no torch),
so the memory planner and the stage agree: megatron-core's DDP + optimizer on CUDA with several
ranks when the optimizer is sharded or experts are split, torch DDP + MasterWeightAdamW otherwise."""

from __future__ import annotations

from typing import Any


def megatron_selected(device: str, world_size: int, optimizer_sharding: str, expert_parallel: int) -> bool:
    return (device == "cuda" and int(world_size) > 1
            and (optimizer_sharding != "none" or int(expert_parallel) > 1))


def uses_megatron_stack(settings: dict[str, Any], device: str) -> bool:
    """On CUDA with several ranks, when the optimizer is sharded or experts are split."""
    par = settings.get("parallel") or {}
    return megatron_selected(device, int(par.get("world_size", 1)), par.get("optimizer_sharding", "none"),
                             int(par.get("expert_parallel", 1)))
