"""The whole model's state dict under expert parallelism: each expert-parallel rank holds
``num_experts / expert_parallel`` experts, numbered locally from 0; the checkpoint numbers them
globally (rank r's local expert i is expert r × local + i), as an unsplit model names them.
"""

from __future__ import annotations

import re
from typing import Any

import torch

# SequentialMLP: "...mlp.experts.local_experts.<i>.linear_fc1.weight"; TEGroupedMLP:
# "...mlp.experts.linear_fc1.weight<i>"; megatron's legacy GroupedMLP stacks the experts in
# one tensor: "...mlp.experts.weight1" [H, local × fc1 out], "...mlp.experts.weight2" [local × F, H].
_SEQUENTIAL = re.compile(r"^(.*\.mlp\.experts\.local_experts\.)(\d+)(\..*)$")
_TE_GROUPED = re.compile(r"^(.*\.mlp\.experts\.linear_fc[12]\.(?:weight|bias))(\d+)$")
_STACKED = {"weight1": 1, "weight2": 0}  # concatenation dim of the legacy GroupedMLP tensors


def is_expert_key(name: str) -> bool:
    return ".mlp.experts." in name


def merge_expert_shards(parts: list[dict[str, torch.Tensor]], local_experts: int) -> dict[str, torch.Tensor]:
    """One state dict of every expert from ``parts[r]``, the expert entries of expert-parallel
    rank r (its local numbering)."""
    out: dict[str, torch.Tensor] = {}
    stacked: dict[str, list[torch.Tensor]] = {}
    for rank, part in enumerate(parts):
        for name, t in part.items():
            if m := _SEQUENTIAL.match(name):
                out[f"{m[1]}{rank * local_experts + int(m[2])}{m[3]}"] = t
            elif m := _TE_GROUPED.match(name):
                out[f"{m[1]}{rank * local_experts + int(m[2])}"] = t
            elif name.rsplit(".", 1)[-1] in _STACKED:
                stacked.setdefault(name, []).append(t)
            else:
                raise ValueError(f"expert parameter {name!r} has no expert index this merge knows")
    for name, ts in stacked.items():
        out[name] = torch.cat(ts, dim=_STACKED[name.rsplit(".", 1)[-1]])
    return out


def full_state_dict(model: torch.nn.Module, expert_parallel: int, local_experts: int) -> dict[str, Any]:
    """The model's state dict with every expert (a collective over the expert-parallel group when
    it has more than one rank: every rank calls it)."""
    sd = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}
    if expert_parallel == 1:
        return sd
    import torch.distributed as dist
    from megatron.core import parallel_state

    mine = {k: v for k, v in sd.items()
            if is_expert_key(k) and isinstance(v, torch.Tensor) and not k.endswith("_extra_state")}
    parts: list[Any] = [None] * expert_parallel
    dist.all_gather_object(parts, mine, group=parallel_state.get_expert_model_parallel_group())
    return {**{k: v for k, v in sd.items() if k not in mine}, **merge_expert_shards(parts, local_experts)}
