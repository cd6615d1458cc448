"""An interrupted pretraining cell resumes from its checkpoint and ends where an
uninterrupted run ends: same step count, same weights."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from effbench import config as cfg
from effbench.data.synthetic import make_pretraining_corpus
from effbench.record import read_records, settings_json

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    make_pretraining_corpus(d, vocab_size=512, train_tokens=40_000, val_tokens=4_000, seed=3)
    return d


def settings() -> dict:
    c = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    c["pretrain"]["training"].update(train_steps=40, warmup_steps=2, checkpoint_interval=4, eval_batches=1,
                                     micro_batch_size=2, global_batch_size=2, warmup_measure_steps=0)
    c["pretrain"]["sizes"]["xs"].update(num_layers=1, seq_length=32)
    c["device"] = "cpu"
    return cfg.pretrain_settings(c, "xs", "gqa")


def run(out: Path, data_dir: Path, s: dict, kill_at_checkpoint: bool = False) -> subprocess.CompletedProcess | None:
    cmd = [sys.executable, str(ROOT / "scripts" / "pretrain.py"), "--settings", settings_json(s), "--config-hash", "t",
           "--data-dir", str(data_dir), "--record", str(out / "record.parquet"), "--samples",
           str(out / "samples.parquet"), "--checkpoint", str(out / "model.pt"), "--resume-dir", str(out / "resume")]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    if not kill_at_checkpoint:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=True)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while not (out / "resume" / "last.pt").exists():
        assert p.poll() is None, "the run ended before writing a resume checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)  # a killed job: no chance to clean up
    p.wait()
    return None


def test_killed_cell_resumes_to_the_same_weights(tmp_path, data_dir):
    s = settings()
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(straight, data_dir, s)
    run(interrupted, data_dir, s, kill_at_checkpoint=True)
    assert not (interrupted / "record.parquet").exists()  # no record that looks complete
    run(interrupted, data_dir, s)
    rec = read_records([interrupted / "record.parquet"]).to_pylist()[0]
    assert rec["resumed_from_step"] > 0 and rec["resumed_from_step"] % 4 == 0
    assert rec["steps"] == 40 - rec["resumed_from_step"]
    a = torch.load(straight / "model.pt", weights_only=False)["model"]
    b = torch.load(interrupted / "model.pt", weights_only=False)["model"]
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(v, b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not (interrupted / "resume" / "last.pt").exists()  # cleaned up once finished


def test_a_checkpoint_for_other_settings_is_not_resumed(tmp_path, data_dir):
    s = settings()
    run(tmp_path, data_dir, s, kill_at_checkpoint=True)
    other = copy.deepcopy(s)
    other["training"]["lr"] = 1e-3
    run(tmp_path, data_dir, other)
    rec = read_records([tmp_path / "record.parquet"]).to_pylist()[0]
    assert rec["resumed_from_step"] == 0 and rec["steps"] == 40
