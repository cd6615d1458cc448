"""Optimizer sharding, expert parallelism and positional encodings in the config: validation
naming the key, the settings each cell gets, and the planner following them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from effbench import config as cfg
from effbench.plan.memory import estimate

from config_edits import edited

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
VOCAB = 151665


def _cells(config: dict) -> dict[str, dict]:
    return {c.name: c.settings for c in cfg.plan(config).pretrain}


def test_paper_shards_the_optimizer_and_splits_experts_of_moe_cells_only():
    cells = _cells(PAPER)
    assert cells["1.5b/moe"]["parallel"]["expert_parallel"] == 4
    assert cells["0.5b/moe"]["parallel"]["expert_parallel"] == 4
    # A dense cell's settings (and so its results) do not depend on the expert-parallel size.
    assert cells["1.5b/gqa"]["parallel"]["expert_parallel"] == 1
    # megatron's cells shard (a transformers family's bf16 state stays whole: test_pretrain_families_config)
    assert all(s["parallel"]["optimizer_sharding"] == "optimizer" for s in cells.values() if "family" not in s["model"])
    # The launch is the data-parallel one (4 processes on one node); sharding and EP travel in
    # the settings the script reads.
    layout = cfg.plan(PAPER).layout
    assert cfg.launch_command("py", layout) == "py -m effbench.torchrun --standalone --nnodes=1 --nproc-per-node=4"
    assert cfg.gpu_resources("cuda", layout) == {"gpu": 4}


def test_the_planner_follows_the_settings():
    cells = _cells(PAPER)
    moe = cells["1.5b/moe"]
    sharded_ep = estimate(moe, VOCAB).peak
    replicas = edited(PAPER, ("pretrain", "parallel"), {"nodes": 1, "gpus_per_node": 4})
    del replicas["cluster"]  # unsharded it does not fit; here only the arithmetic
    full = estimate(_cells(replicas)["1.5b/moe"], VOCAB)
    assert sharded_ep < full.peak
    # Expert parameters divided by EP; everything's optimizer state by the ranks that share it.
    est = estimate(moe, VOCAB)
    assert est.states["weights"] < full.states["weights"] / 3  # experts are ~96 % of the weights
    assert est.states["optimizer"] < full.states["optimizer"] / 3


@pytest.mark.parametrize(("parallel", "match"), [
    ({"gpus_per_node": 4, "expert_parallel": 3},
     r"`pretrain.parallel.expert_parallel`: 3 does not divide the world size 4"),
    ({"gpus_per_node": 2, "expert_parallel": 2, "optimizer_sharding": "optimizer"},
     r"`pretrain.parallel.expert_parallel`: expert parallelism runs on CUDA only"),
])
def test_expert_parallel_errors_name_the_key(parallel, match):
    c = edited(DEFAULT, ("pretrain", "training", "global_batch_size"), 32)
    c["device"] = "cpu"
    with pytest.raises(cfg.ConfigError, match=match):
        cfg.plan(edited(c, ("pretrain", "parallel"), parallel))


def test_expert_parallel_must_divide_the_experts():
    c = edited(PAPER, ("pretrain", "parallel", "gpus_per_node"), 8)
    c = edited(c, ("pretrain", "techniques", "moe", "moe", "num_experts"), 6)
    c["pretrain"]["parallel"]["expert_parallel"] = 4
    c["pretrain"]["training"]["global_batch_size"] = 256
    with pytest.raises(cfg.ConfigError, match=r"pretrain cell 0.5b/moe: config key `pretrain.parallel."
                                              r"expert_parallel`: 4 does not divide moe.num_experts 6"):
        cfg.plan(c)


def test_unknown_sharding_is_refused_by_the_schema():
    with pytest.raises(cfg.ConfigError, match=r"pretrain.parallel.optimizer_sharding"):
        cfg.plan(edited(DEFAULT, ("pretrain", "parallel"), {"optimizer_sharding": "zero3"}))


def test_position_embedding_default_and_errors():
    cells = _cells(PAPER)
    assert cells["1.5b/gqa"]["model"]["position_embedding"] == "rope"
    assert cells["1.5b/abs"]["model"]["position_embedding"] == "learned_absolute"
    assert cells["1.5b/nope"]["model"]["position_embedding"] == "none"
    assert cells["1.5b/sinusoidal"]["model"]["position_embedding"] == "sinusoidal"
    assert cells["1.5b/relative"]["model"]["position_embedding"] == "relative"
    # The embedded default has none of them (its run is over its time budget already).
    assert {m["position_embedding"] for m in (s["model"] for s in _cells(DEFAULT).values())} == {"rope"}
    bad = edited(DEFAULT, ("pretrain", "techniques", "mla", "position_embedding"), "none")
    with pytest.raises(cfg.ConfigError,
                       match=r"mla applies its own decoupled RoPE.*`pretrain.techniques.mla.position_embedding`"):
        cfg.plan(bad)
    # Llama / Qwen2 / DeepseekV3 / Mixtral checkpoints have RoPE only: another encoding's export is refused.
    export = edited(PAPER, ("pretrain", "export_hf"), ["nope"])
    with pytest.raises(cfg.ConfigError,
                       match=r"`pretrain.export_hf`: technique 'nope' \(1.5b/nope\) cannot be exported: "
                             r"position_embedding 'none'"):
        cfg.plan(export)


def test_learned_absolute_table_is_counted():
    from effbench.plan.params import parameter_counts

    cells = _cells(PAPER)
    rope, table = cells["1.5b/gqa"]["model"], cells["1.5b/abs"]["model"]
    extra = parameter_counts(table, VOCAB)["embedding"] - parameter_counts(rope, VOCAB)["embedding"]
    assert extra == 2048 * 1536  # seq_length × hidden
    # The sinusoidal table is fixed: a buffer, no parameters (tests/pretrain/test_model_cpu.py).
    assert parameter_counts(cells["1.5b/sinusoidal"]["model"], VOCAB) == parameter_counts(rope, VOCAB)
    # T5's relative bias: 32 buckets × 12 heads, one table for the model.
    relative = parameter_counts(cells["1.5b/relative"]["model"], VOCAB)
    assert relative["non_embedding"] - parameter_counts(rope, VOCAB)["non_embedding"] == 32 * 12


def test_expert_parallel_divides_expert_states_only():
    from effbench.plan.memory import state_bytes

    # 1000 parameters, 800 of them experts; 4 data-parallel ranks.
    full = state_bytes(1000, "bf16", "optimizer", 4)
    split = state_bytes(1000, "bf16", "optimizer", 4, expert_params=800, expert_parallel=4)
    assert split["weights"] == (200 + 800 / 4) * 2
    # Dense optimizer state over 4 ranks; the experts' over the 4 / 4 = 1 rank holding each.
    assert split["optimizer"] == 200 * 12 / 4 + 800 / 4 * 12 / 1
    assert full["optimizer"] == 1000 * 12 / 4
    with pytest.raises(ValueError, match="expert_parallel 3 must divide data_parallel 4"):
        state_bytes(1000, "bf16", "none", 4, expert_params=800, expert_parallel=3)
