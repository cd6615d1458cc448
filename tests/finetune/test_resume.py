"""A killed fine-tuning cell resumes from its last trainer checkpoint, counting each step once.

The real stage script (as the rule runs it) is killed once a checkpoint is complete, then run
again: the record says where it resumed, measures only the steps it ran, and the adapter is saved.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from record_consistency import check_record_file
from stage import LORA, run_stage, settings, stage_command

from effbench.finetune.resume import MARKER, find_resumable, mark_checkpoint

MAX_STEPS = 40


def _marked_steps(adapter: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in adapter.glob(f"checkpoint-*/{MARKER}"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_cell_resumes_from_its_checkpoint(tmp_path, tiny_model, task_dir, sig):
    s = settings("lora", LORA, gradient_accumulation_steps=1, max_steps=MAX_STEPS, checkpoint_interval=4,
                 warmup_measure_steps=0)
    cmd, env, cell = stage_command(tmp_path, s, tiny_model, task_dir)
    cell.mkdir(parents=True)
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not _marked_steps(cell / "adapter"):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    assert proc.returncode == -sig  # killed mid-run, not finished
    assert not (cell / "record.parquet").exists()
    done = _marked_steps(cell / "adapter")[-1]
    assert 0 < done < MAX_STEPS

    p, _ = run_stage(tmp_path, s, tiny_model, task_dir)
    assert p.returncode == 0, p.stderr[-6000:]
    r = check_record_file(cell / "record.parquet")  # this run's window, inside this run's job
    assert r["resumed_from_step"] == done and f"resuming from {cell / 'adapter'}/checkpoint-{done}" in p.stderr
    assert r["steps"] == MAX_STEPS - done  # only the steps this run did are measured
    assert r["samples"] == r["steps"] * 4
    assert (cell / "adapter" / "adapter_model.safetensors").exists()
    assert not list((cell / "adapter").glob("checkpoint-*"))  # trainer checkpoints cleaned up


def _fake_checkpoint(adapter: Path, step: int, max_steps: int, settings_text: str | None) -> Path:
    path = adapter / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    if settings_text is not None:
        mark_checkpoint(path, settings_text)
    return path


def test_only_complete_checkpoints_of_the_same_settings_resume(tmp_path):
    good = _fake_checkpoint(tmp_path, 4, 10, "A")
    partial = _fake_checkpoint(tmp_path, 8, 10, None)  # killed while the Trainer saved it
    assert find_resumable(tmp_path, "A") == good and not partial.exists()
    assert find_resumable(tmp_path, "B") is None and not good.exists()  # other settings: never resumed
    _fake_checkpoint(tmp_path, 10, 10, "A")  # at the last step: nothing left to run or measure
    assert find_resumable(tmp_path, "A") is None
