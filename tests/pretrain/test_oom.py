"""Out of memory in pretraining is a result: a real allocation refused under the host memory cap
(pretrain.training.host_memory_limit_gb) gives an `oom` record, and the stage script succeeds."""

from __future__ import annotations

import subprocess

from test_resume import data_dir, run, settings  # noqa: F401 - data_dir is a fixture

from record_consistency import check_window

from effbench.record import read_records


def test_out_of_memory_is_an_oom_record(tmp_path, data_dir):  # noqa: F811
    s = settings()
    # ~100 M parameters: 0.4 GB of weights fit under the cap, gradients and Adam's state (1.2 GB) do not.
    s["model"].update(num_layers=8, hidden_size=1024, num_attention_heads=16, ffn_hidden_size=4096)
    s["training"]["host_memory_limit_gb"] = 1.2
    p = run(tmp_path, data_dir, s)
    assert isinstance(p, subprocess.CompletedProcess) and p.returncode == 0  # run() checks too
    (r,) = read_records([tmp_path / "record.parquet"]).to_pylist()
    assert r["status"] == "oom", r
    assert '"host_memory_limit_gb":1.2' in r["status_detail"]
    check_window(r, tmp_path / "samples.parquet")  # the time until the failure, inside the job
    assert "host data memory capped at 1.20 GB" in p.stderr
    assert not (tmp_path / "model.pt").exists()
