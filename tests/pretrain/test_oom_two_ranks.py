"""Out of memory under data parallelism is a result too: two gloo ranks, each capped below what
its gradients and Adam's state need, give one `oom` record from rank 0, and the launch succeeds
(before, rank 1's error failed the torchrun job and no record was written)."""

from __future__ import annotations

from launch_helpers import run, settings

from effbench.record import read_records


def test_two_ranks_out_of_memory_is_one_oom_record(tmp_path, data_dir):
    s = settings("gqa", 2)
    # ~100 M parameters: 0.4 GB of weights fit under each rank's cap, gradients and Adam's state do not.
    s["model"].update(num_layers=8, hidden_size=1024, num_attention_heads=16, ffn_hidden_size=4096)
    s["training"]["host_memory_limit_gb"] = 1.2
    p = run(tmp_path, data_dir, s)  # asserts the launch exits 0
    (r,) = read_records([tmp_path / "record.parquet"]).to_pylist()
    assert r["status"] == "oom", r
    assert '"gpus_per_node":2' in r["status_detail"]
    assert "rank 1 ran out of memory" in p.stderr
    assert not (tmp_path / "model.pt").exists()
