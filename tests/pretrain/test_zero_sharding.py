"""Optimizer state sharded over two data-parallel processes (ZeRO-1; gloo on a CPU, torch's
ZeroRedundancyOptimizer): each rank holds half of it, and training is unchanged.

The unsharded run is the data-parallel test's (the `two_ranks` fixture): same cell, same
global batches, the same two processes, only `pretrain.parallel.optimizer_sharding` differs.
"""

from __future__ import annotations

import json

import pytest
import torch

from effbench.record import read_records
from launch_helpers import run, settings


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("zero")
    run(out, data_dir, settings("gqa", 2, optimizer_sharding="optimizer"))
    return out


def _record(folder) -> dict:
    (r,) = read_records([folder / "record.parquet"]).to_pylist()
    return r


def test_optimizer_state_per_rank_halves(sharded, two_ranks):
    full, zero = json.loads(_record(two_ranks[0])["parallel_json"]), json.loads(_record(sharded)["parallel_json"])
    assert full["optimizer_sharding"] == "none" and zero["optimizer_sharding"] == "optimizer"
    assert zero["engine"] == "torch DDP + ZeroRedundancyOptimizer"
    replicated, shards = full["optimizer_state_bytes_per_rank"], zero["optimizer_state_bytes_per_rank"]
    # Unsharded, every rank holds the whole AdamW state (fp32 m and v: 8 bytes per parameter).
    total = 8 * _record(sharded)["params_total"]
    assert replicated == [total, total]
    # Sharded, the two shards are the whole state once...
    assert sum(shards) == total
    # ...split in halves. ZeroRedundancyOptimizer assigns whole tensors (largest first, to the
    # rank holding less), so a rank can exceed half by at most the largest tensor's state.
    weights = torch.load(sharded / "model.pt", weights_only=False)["model"]
    largest = 8 * max(v.numel() for v in weights.values() if isinstance(v, torch.Tensor))
    assert max(shards) <= total / 2 + largest
    # This model's tensors (fc1 36 % of the parameters, embedding, qkv and fc2 18 % each, ...)
    # pack to about 54 / 46 %.
    assert max(shards) / total < 0.6, shards


def test_sharded_training_matches_the_unsharded_run(sharded, two_ranks):
    """Each rank steps its shard with the same all-reduced, clipped fp32 gradients and the same
    single-tensor AdamW arithmetic, then broadcasts it: the result should be the unsharded one up
    to float rounding. Tolerance 1e-6 relative on the losses and 1e-5 on the weights (a few fp32
    ulps after four steps), far below the differences any other optimizer state would make (the
    first step alone moves the weights by ~lr = 3e-3)."""
    full, zero = _record(two_ranks[0]), _record(sharded)
    assert zero["status"] == "ok" and zero["steps"] == full["steps"] == 3
    assert zero["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    assert zero["val_loss"] == pytest.approx(full["val_loss"], rel=1e-6)
    w_full = torch.load(two_ranks[0] / "model.pt", weights_only=False)["model"]
    w_zero = torch.load(sharded / "model.pt", weights_only=False)["model"]
    assert w_full.keys() == w_zero.keys()
    for k, v in w_full.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            torch.testing.assert_close(w_zero[k], v, rtol=1e-5, atol=1e-7, msg=k)
    assert not (sharded / "resume" / "last.pt").exists()  # written at step 2 (gathered to rank 0), then removed
