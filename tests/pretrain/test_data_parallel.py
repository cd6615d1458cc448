"""Data parallel pretraining: torchrun with two processes (gloo on a CPU) writes one record,
from rank 0, whose parallel layout says world size 2, and whose MFU counts both devices."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from record_consistency import check_mfu, check_record

from effbench.record import read_records, settings_json
from launch_helpers import PEAK, ROOT, run, settings


def test_two_processes_train_the_same_model_as_one(tmp_path, data_dir, two_ranks):
    """Same global batches, gradients averaged over ranks: the weights match a one-process run."""
    one = tmp_path / "one"
    run(one, data_dir, settings("gqa", 1))
    two, p = two_ranks
    (r,) = read_records([two / "record.parquet"]).to_pylist()
    layout = json.loads(r["parallel_json"])
    assert layout["world_size"] == 2 and layout["data_parallel"] == 2 and layout["launcher"] == "torchrun"
    assert layout["gradient_accumulation"] == 2  # 8 sequences = 2 per micro-batch × 2 ranks × 2
    assert r["status"] == "ok" and r["steps"] == 3 and r["tokens"] == 3 * 8 * 32
    check_record(r, two / "samples.parquet")  # TT, tokens/s, J/token, MFU over 2 devices, the window
    assert p.stderr.count("wrote ") == 1  # rank 0 alone writes the record
    assert not (two / "resume" / "last.pt").exists()
    w1 = torch.load(one / "model.pt", weights_only=False)["model"]
    w2 = torch.load(two / "model.pt", weights_only=False)["model"]
    assert w1.keys() == w2.keys()
    for k, v in w1.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            torch.testing.assert_close(w2[k], v, rtol=1e-4, atol=1e-5, msg=k)
    (r1,) = read_records([one / "record.parquet"]).to_pylist()
    assert json.loads(r1["parallel_json"])["world_size"] == 1
    assert abs(r1["val_loss"] - r["val_loss"]) < 1e-4


def test_val_loss_and_ppl_carry_an_interval_over_the_eval_batches(tmp_path, data_dir):
    """Rank 0 evaluates every batch itself (none split over the ranks): 3 eval batches are 3
    replicates of the validation loss, t on 2 df; PPL's interval is exp of the loss interval's ends."""
    s = settings("gqa", 2)
    s["training"]["eval_batches"] = 3
    run(tmp_path, data_dir, s)
    (r,) = read_records([tmp_path / "record.parquet"]).to_pylist()
    check_record(r, tmp_path / "samples.parquet")  # every interval holds its value, none below 0
    assert r["val_loss__ci_low"] < r["val_loss"] < r["val_loss__ci_high"]
    assert r["val_loss__ci_n"] == 3 and r["val_loss__ci_method"] == "t_eval_batches"
    assert r["ppl"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-12)
    assert r["ppl__ci_low"] == pytest.approx(math.exp(r["val_loss__ci_low"]), rel=1e-12)
    assert r["ppl__ci_high"] == pytest.approx(math.exp(r["val_loss__ci_high"]), rel=1e-12)
    assert r["ppl__ci_n"] == 3 and r["ppl__ci_method"] == "exp(t_eval_batches)"


def test_mfu_counts_every_device(data_dir, two_ranks):
    """MFU = FLOPs of every rank's tokens / (time × peak per device × devices): two CPUs at the
    stated peak, not one (which read twice the utilisation)."""
    two, _ = two_ranks
    (r,) = read_records([two / "record.parquet"]).to_pylist()
    check_mfu(r, PEAK)  # FLOPs per token × tokens / (AL × steps × peak × world size 2)
    assert json.loads(r["parallel_json"])["world_size"] == 2
    assert r["mfu_frac__source"] == "analytic_flops/stated_measure.peak_flops.fp32_x_2_devices"


def test_moe_with_two_processes(tmp_path, data_dir):
    """Experts that no token reached on a rank have no gradient there; DDP still reduces."""
    run(tmp_path, data_dir, settings("moe", 2))
    (r,) = read_records([tmp_path / "record.parquet"]).to_pylist()
    assert r["status"] == "ok" and json.loads(r["parallel_json"])["world_size"] == 2


def test_layout_and_launch_must_agree(tmp_path, data_dir):
    """A cell configured for two processes but started as one stops with the layout's key."""
    s = settings("gqa", 2)
    cmd = [sys.executable, str(ROOT / "scripts" / "pretrain.py"), "--settings", settings_json(s), "--config-hash", "t",
           "--data-dir", str(data_dir), "--record", str(tmp_path / "r.parquet"), "--samples",
           str(tmp_path / "s.parquet"), "--checkpoint", str(tmp_path / "m.pt"), "--resume-dir", str(tmp_path / "res")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert p.returncode != 0 and "pretrain.parallel" in p.stderr
    assert not (tmp_path / "r.parquet").exists()
