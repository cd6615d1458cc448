"""megatron-core's DDP and optimizer configs for a cell (real megatron dataclasses, built on a
CPU), when the stage uses them, and the gathering of experts split over ranks. The wrapping
itself needs CUDA: docs/pretraining-parallel.md says what a GPU check must still run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from effbench import config as cfg
from effbench.pretrain import megatron_stack
from effbench.pretrain.experts import merge_expert_shards

ROOT = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


def _cell(name: str, **parallel) -> dict:
    c = copy.deepcopy(PAPER)
    c["pretrain"]["parallel"].update(parallel)
    return cfg.pretrain_settings(c, *name.split("/"))


def test_paper_cells_train_on_megatrons_stack_on_cuda_only():
    moe = _cell("1.5b/moe")
    assert megatron_stack.uses_megatron_stack(moe, "cuda")
    assert not megatron_stack.uses_megatron_stack(moe, "cpu")  # ZeroRedundancyOptimizer there
    dense = _cell("1.5b/gqa", optimizer_sharding="none")
    assert not megatron_stack.uses_megatron_stack(dense, "cuda")  # torch DDP + MasterWeightAdamW
    assert megatron_stack.uses_megatron_stack(_cell("1.5b/moe", optimizer_sharding="none"), "cuda")  # EP 4


def test_configs_keep_the_paper_recipe():
    s = _cell("1.5b/moe")
    ddp = megatron_stack.ddp_config(s)
    assert ddp.use_distributed_optimizer and ddp.overlap_grad_reduce and ddp.grad_reduce_in_fp32
    opt = megatron_stack.optimizer_config(s)
    assert opt.optimizer == "adam" and opt.decoupled_weight_decay  # AdamW
    assert opt.bf16 and opt.params_dtype == torch.bfloat16 and opt.main_params_dtype == torch.float32
    assert opt.use_distributed_optimizer and opt.clip_grad == 1.0 and opt.loss_scale is None
    assert (opt.lr, opt.min_lr, opt.weight_decay, opt.adam_beta1, opt.adam_beta2) == (1e-4, 1e-5, 0.1, 0.9, 0.95)
    unsharded = megatron_stack.optimizer_config(_cell("1.5b/moe", optimizer_sharding="none"))
    assert not unsharded.use_distributed_optimizer


def test_schedule_sets_lr_and_megatrons_weight_decay_multipliers():
    groups = [{"params": [], "wd_mult": 1.0, "lr_mult": 1.0}, {"params": [], "wd_mult": 0.0, "lr_mult": 1.0},
              {"params": [], "weight_decay": 0.1}]  # a torch group keeps its own weight decay

    class Opt:
        param_groups = groups

    megatron_stack.set_schedule(Opt(), 2e-4, 0.1)
    assert [g["lr"] for g in groups] == [2e-4] * 3
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0, 0.1]


@pytest.mark.parametrize("layout", ["sequential", "te_grouped", "legacy_grouped"])
def test_expert_shards_are_renumbered_globally(layout):
    """Two expert-parallel ranks with two local experts each: rank 1's expert 0 is expert 2."""
    p = "decoder.layers.0.mlp.experts."
    parts = []
    for rank in range(2):
        if layout == "sequential":
            parts.append({f"{p}local_experts.{i}.linear_fc1.weight": torch.full((2, 3), 10.0 * rank + i)
                          for i in range(2)})
        elif layout == "te_grouped":
            parts.append({f"{p}linear_fc2.weight{i}": torch.full((3, 2), 10.0 * rank + i) for i in range(2)})
        else:  # weight1 [H, local × 2F], weight2 [local × F, H]
            parts.append({f"{p}weight1": torch.full((3, 4), 10.0 * rank),
                          f"{p}weight2": torch.full((2, 3), 10.0 * rank)})
    merged = merge_expert_shards(parts, local_experts=2)
    if layout == "sequential":
        assert [float(merged[f"{p}local_experts.{e}.linear_fc1.weight"][0, 0]) for e in range(4)] == [0, 1, 10, 11]
    elif layout == "te_grouped":
        assert [float(merged[f"{p}linear_fc2.weight{e}"][0, 0]) for e in range(4)] == [0, 1, 10, 11]
    else:
        assert merged[f"{p}weight1"].shape == (3, 8) and float(merged[f"{p}weight1"][0, 4]) == 10
        assert merged[f"{p}weight2"].shape == (4, 3) and float(merged[f"{p}weight2"][2, 0]) == 10
    with pytest.raises(ValueError, match="no expert index"):
        merge_expert_shards([{f"{p}router.weight": torch.zeros(1)}], 1)
