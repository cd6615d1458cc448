"""The real LlamaFactory stage on a tiny model: methods run and are measured; OOM is a result.

Runs scripts/finetune.py in a subprocess, exactly as the rule does (the finetune environment),
and reads the records it writes.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from stage import DRIVER_PY, LORA, ROOT, run_stage, settings

from record_consistency import (check_record_file, check_trainable, check_window, model_params,
                                safetensors_payload_bytes)

from effbench.record import read_records


# Every method of the paper (config/config.yaml's method settings at rank 4), the shortest run
# that still has an interval: 3 optimizer steps, the first one warm-up. Each entry: the method's
# settings and what LlamaFactory says (log or saved adapter config) when it really applies it.
METHODS = {
    "lora": (LORA, "Fine-tuning method: LoRA", {}),
    "loraplus": ({**LORA, "loraplus_lr_ratio": 16}, "Using LoRA+ optimizer with loraplus lr ratio 16.00", {}),
    "rslora": ({**LORA, "use_rslora": True}, "Fine-tuning method: LoRA", {"use_rslora": True}),
    "dora": ({**LORA, "use_dora": True}, "Fine-tuning method: DoRA", {"use_dora": True}),
    "pissa": ({**LORA, "pissa_init": True, "pissa_iter": 4}, "Using PiSSA initialization with FSVD steps 4",
              {"init_lora_weights": "pissa_niter_4"}),
    "freeze": ({"finetuning_type": "freeze", "freeze_trainable_layers": 1}, "Fine-tuning method: Freeze", None),
    "full": ({"finetuning_type": "full"}, "Fine-tuning method: Full", None),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_llamafactory_methods_run_and_are_measured(tmp_path, tiny_model, task_dir, method):
    ms, said, adapter_config = METHODS[method]
    # evaluation batches of 6: 16 held-out samples are 6 + 6 + 4, a short last batch
    p, cell = run_stage(tmp_path, settings(method, ms, max_steps=3, per_device_eval_batch_size=6), tiny_model, task_dir)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    assert said in p.stdout + p.stderr  # the method was applied, not only configured
    r = check_record_file(cell / "record.parquet")  # TT/ST, tokens/s, J/token, the window (tests/record_consistency.py)
    assert r["stage"] == "finetune" and r["cell"] == f"tiny/synthetic/{method}"
    assert r["steps"] == 2 and r["samples"] == 2 * 8  # 3 steps of 4 x 2 samples, the first one warm-up
    # cutoff 64 bounds each sample's tokens; every sample has at least its prompt and answer
    assert 2 * 8 * 2 <= r["tokens"] <= 2 * 8 * 64
    model_config = json.loads((tiny_model / "config.json").read_text())
    check_trainable(r, model_config, ms)
    assert r["amu_gb__ci_n"] == 2 and r["al_s_per_iter__ci_low"] <= r["al_s_per_iter"] <= r["al_s_per_iter__ci_high"]
    saved = cell / "adapter"
    if adapter_config is None:  # freeze, full: the saved artefact is the whole model
        (weights,) = saved.glob("model*.safetensors")
        assert r["disk_bytes"] == weights.stat().st_size
        assert safetensors_payload_bytes(weights) == 4 * model_params(model_config)  # fp32, tied embedding once
    else:  # an adapter, with the method's own settings
        weights = saved / "adapter_model.safetensors"
        assert r["disk_bytes"] == weights.stat().st_size
        assert safetensors_payload_bytes(weights) == 4 * r["params_trainable"]  # the trained tensors, fp32
        saved_cfg = json.loads((saved / "adapter_config.json").read_text())
        assert saved_cfg["r"] == 4 and {k: saved_cfg[k] for k in adapter_config} == adapter_config
    # the train loss the trainer logged, as the record says it averaged it
    logged = [json.loads(ln)["loss"] for ln in (saved / "trainer_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(ln)]
    assert r["train_loss"] == pytest.approx(sum(logged[-10:]) / len(logged[-10:]))
    assert "exact match on 8 held-out items" in p.stderr and 0 <= r["accuracy"] <= 1
    # the held-out loss: LlamaFactory's eval_loss, with the t interval over its evaluation batches
    # (16 held-out samples in batches of 6, 6 and 4: t on 2 df), as the batches reproduce it (the
    # Trainer counts the short batch as a full one: heldout.batch_weights)
    assert r["val_loss__source"] == "llamafactory_eval_loss" and r["val_loss__ci_method"] == "t_eval_batches"
    assert r["val_loss__ci_n"] == 3 and r["val_loss__ci_low"] < r["val_loss"] < r["val_loss__ci_high"]
    assert "step 3 of 3" in p.stderr  # progress in the log


def test_out_of_memory_is_a_result(tmp_path, task_dir, tiny_model):
    """A real allocation failure under a host memory cap: an oom record, and OOM in the table."""
    big = tmp_path / "big-model"
    from conftest import make_tiny_llama  # full fine-tuning needs ~1.5 GB more than the ~1.5 GB of data segment the imports reserve

    rows = json.loads((task_dir / "sft_train.json").read_text())
    make_tiny_llama(big, [r["instruction"] for r in rows] * 4, hidden=1024, layers=8, ffn=2816)
    s = settings("full", {"finetuning_type": "full"}, host_memory_limit_gb=2.5)
    p, cell = run_stage(tmp_path, s, big, task_dir)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    (r,) = read_records([cell / "record.parquet"]).to_pylist()
    assert r["status"] == "oom", r
    assert "settings tried" in r["status_detail"] and '"host_memory_limit_gb":2.5' in r["status_detail"]
    check_window(r, cell / "samples.parquet")  # the time until the failure, inside the job
    if DRIVER_PY.exists():  # the table (driver environment) shows the cell as OOM
        out = tmp_path / "agg"
        a = subprocess.run([str(DRIVER_PY), str(ROOT / "scripts" / "aggregate.py"), "--stage", "finetune",
                            "--out", str(out), "--records", str(cell / "record.parquet")],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert a.returncode == 0, a.stderr
        table = (out / "tables" / "finetune.md").read_text()
        assert "| tiny | synthetic | full |" in table and "OOM" in table


def test_any_other_failure_fails_the_job(tmp_path, task_dir):
    p, cell = run_stage(tmp_path, settings("lora", LORA), tmp_path / "no-such-model", task_dir)
    assert p.returncode != 0
    assert not (cell / "record.parquet").exists()
