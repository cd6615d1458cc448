"""Run the fine-tuning stage script (scripts/finetune.py) as the rule does, on the test fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER_PY = ROOT / ".venvs" / "driver" / "bin" / "python"

LORA = {"finetuning_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.1, "lora_target": "all"}


def settings(method: str, method_settings: dict, **training) -> dict:
    t = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 2,
         "learning_rate": 1e-3, "num_train_epochs": 1, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
         "cutoff_len": 64, "precision": "fp32", "threads": 1, "warmup_measure_steps": 1, "max_new_tokens": 4}
    t.update(training)
    return {"model": "tiny", "method": method, "task": "synthetic", "model_source": {"path": "tiny"},
            "template": "default", "trust_remote_code": False, "method_settings": method_settings, "training": t,
            "task_settings": {"source": "synthetic", "synthetic": {"n_train": 48, "n_eval": 16},
                              "exact_match_samples": 8},
            "device": "cpu", "seed": 1, "measure": {"interval_s": 0.05}}


def stage_command(tmp: Path, s: dict, model: Path, task_dir: Path) -> tuple[list[str], dict[str, str], Path]:
    """(command, environment, the cell's folder) of one stage run, launched as the rule launches it
    (torchrun with one process per ``parallel.gpus``, gloo on a CPU; else the interpreter)."""
    from effbench import config as cfg

    cell = tmp / "finetune" / s["model"] / s["task"] / s["method"]  # the results layout (aggregation checks it)
    launch = cfg.launch_command(sys.executable, cfg.finetune_layout(s)).split()
    cmd = [*launch, str(ROOT / "scripts" / "finetune.py"), "--settings", json.dumps(s), "--config-hash", "test",
           "--model-path", str(model), "--data-dir", str(task_dir), "--output-dir", str(cell / "adapter"),
           "--record", str(cell / "record.parquet"), "--samples", str(cell / "samples.parquet")]
    # A registry of this test's own: a concurrent run of the same cell elsewhere on the host
    # (another checkout's tests) would otherwise flag the record as not measured alone.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "EFFBENCH_JOB_REGISTRY": str(tmp / "job-registry")}
    return cmd, env, cell


def run_stage(tmp: Path, s: dict, model: Path, task_dir: Path) -> tuple[subprocess.CompletedProcess, Path]:
    cmd, env, cell = stage_command(tmp, s, model, task_dir)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return p, cell
