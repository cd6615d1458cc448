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

from effbench.record import read_records


@pytest.mark.parametrize("method,ms", [("lora", LORA), ("dora", {**LORA, "use_dora": True}),
                                       ("freeze", {"finetuning_type": "freeze", "freeze_trainable_layers": 1})])
def test_llamafactory_methods_run_and_are_measured(tmp_path, tiny_model, task_dir, method, ms):
    p, cell = run_stage(tmp_path, settings(method, ms), tiny_model, task_dir)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    (r,) = read_records([cell / "record.parquet"]).to_pylist()
    assert r["status"] == "ok" and r["stage"] == "finetune" and r["cell"] == f"tiny/synthetic/{method}"
    assert r["steps"] == 5  # 48 samples / (4 x 2) = 6 optimizer steps, the first one is warm-up
    assert r["samples"] == 5 * 8
    assert r["train_loss"] > 0 and r["val_loss"] > 0 and 0 <= r["accuracy"] <= 1
    assert r["al_s_per_iter"] > 0 and r["st_samples_per_param_s"] > 0 and r["tokens"] > 0
    assert r["amu_gb"] > 0 and r["pcu_frac"] is not None
    assert 0 < r["params_trainable"] < r["params_total"]
    assert r["params_trainable_frac"] == pytest.approx(r["params_trainable"] / r["params_total"])
    assert r["disk_bytes"] > 0
    if method == "freeze":  # the saved artefact is the whole model
        assert any((cell / "adapter").glob("model*.safetensors"))
    else:  # an adapter, much smaller than the model
        assert (cell / "adapter" / "adapter_model.safetensors").exists()
        assert r["disk_bytes"] < (tiny_model / "model.safetensors").stat().st_size
    if r["aec_w"] is None:
        assert r["aec_w__missing"]  # missing with a reason, never 0
    assert "exact match on 8 held-out items" in p.stderr
    assert "step 6 of 6" in p.stderr  # progress in the log


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
    assert r["seconds"] > 0
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
