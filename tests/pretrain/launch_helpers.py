"""Shared by the multi-process pretraining tests: a tiny cell's settings and its launch through
the workflow's own launcher (torchrun with gloo on a CPU) and the stage script; the resume tests'
kill at a known step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from effbench import config as cfg
from effbench.record import settings_json

ROOT = Path(__file__).resolve().parents[2]
PEAK = 5.0e10  # a stated per-device peak (a CPU has none in the datasheet table)

# Runs the stage script with its resume checkpoint writer wrapped: the process SIGKILLs itself as
# soon as the checkpoint after step KILL_AFTER is written (a kill at a known step, without racing
# the training loop from outside).
KILL_AFTER_SAVE = """
import os, runpy, signal, sys
import effbench.pretrain.train as train
save = train.save_resume
def save_then_die(job, step, *args, **kwargs):
    save(job, step, *args, **kwargs)
    if step >= int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
train.save_resume = save_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def settings(technique: str, gpus_per_node: int, **parallel: Any) -> dict:
    """A one-layer xs cell of the embedded default, 4 steps of 8 sequences of 32 tokens, on
    ``gpus_per_node`` CPU processes; ``parallel`` adds pretrain.parallel keys."""
    c = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    c["pretrain"]["training"].update(train_steps=4, warmup_steps=1, checkpoint_interval=2, eval_batches=1,
                                     micro_batch_size=2, global_batch_size=8, warmup_measure_steps=1)
    c["pretrain"]["sizes"]["xs"].update(num_layers=1, seq_length=32)
    c["pretrain"]["parallel"] = {"nodes": 1, "gpus_per_node": gpus_per_node, **parallel}
    c["device"] = "cpu"
    c["measure"]["peak_flops"] = {"fp32": PEAK}
    return cfg.pretrain_settings(c, "xs", technique)


def run(out: Path, data_dir: Path, s: dict) -> subprocess.CompletedProcess:
    """Train the cell into ``out`` (record.parquet, model.pt) as the workflow's rule would."""
    launch = cfg.launch_command(sys.executable, s["parallel"])
    cmd = [*launch.split(), str(ROOT / "scripts" / "pretrain.py"), "--settings", settings_json(s),
           "--config-hash", "t", "--data-dir", str(data_dir), "--record", str(out / "record.parquet"),
           "--samples", str(out / "samples.parquet"), "--checkpoint", str(out / "model.pt"),
           "--resume-dir", str(out / "resume")]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return p
