"""Preflight's run-time estimate scales with the GPUs a cell runs on (effbench.preflight.runtime).

The model the module states: without a measured record, time = FLOPs / (MFU × peak × devices),
the work being data parallel over every device of the layout:

- pretraining: the global batch is fixed, so the tokens (and FLOPs) are too and the time goes
  as 1 / (nodes × gpus_per_node);
- fine-tuning by epochs: the dataset's rows fix the samples, so the time goes as 1 / gpus;
  by max_steps: each step takes one batch per GPU, so the samples grow with the GPUs and the
  time per cell stays the same;
- a measured rate transfers only to a cell of the same shape, and the layout is part of it.

Each test reads the predicted hours at 1, 4 and 8 GPUs from the rows and compares them with the
model evaluated here (its FLOPs per token and peak taken from the modules that define them);
an estimate that ignores the GPU count predicts the same hours for all three and fails.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fake_hub import hf_config

from effbench.config.memory import vocab_size
from effbench.measure.peaks import peak_flops
from effbench.plan.params import flops_per_token
from effbench.preflight.profile import load_profile
from effbench.preflight.references import Resolved
from effbench.preflight.run import expand
from effbench.preflight.runtime import ASSUMED_GPU, runtime_rows
from effbench.preflight.shapes import from_hf_config

ROOT = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
PROFILE = load_profile(ROOT / "profiles" / "slurm")
# A low MFU makes the hours large, so that the rows' one decimal is exact to < 0.2 %, and puts the
# pretraining cell over the profile's limit on 1 and 4 GPUs but not on 8.
MFU = 0.01
LAYOUTS = {1: (1, 1), 4: (1, 4), 8: (2, 4)}  # GPUs: (nodes, gpus_per_node)


def hours(detail: str) -> float:
    m = re.match(r"predicted ([\d.]+) h \(", detail)
    assert m, detail
    return float(m.group(1))


def _within_rounding(got: float, want: float) -> bool:
    return abs(got - want) <= 0.05 + 1e-9  # the row prints hours to one decimal


def _pretrain_config(gpus: int) -> dict:
    c = copy.deepcopy(PAPER)
    for stage in ("finetune", "quantize", "eval", "inference"):
        c.pop(stage, None)
    c["pretrain"]["grid"] = {"0.5b": ["gqa"]}
    nodes, per_node = LAYOUTS[gpus]
    c["pretrain"]["parallel"] = {**c["pretrain"]["parallel"], "nodes": nodes, "gpus_per_node": per_node,
                                 "expert_parallel": 1}
    return c


def test_pretraining_estimate_divides_by_every_gpu_of_the_layout(tmp_path: Path) -> None:
    limit_h = PROFILE.runtime_min("pretrain") / 60 * (1 + PROFILE.retries)  # pretraining resumes
    got = {}
    for gpus in LAYOUTS:
        plan = expand(_pretrain_config(gpus))
        (row,) = runtime_rows(plan, Resolved({}, {}), PROFILE, tmp_path / "no-records", mfu=MFU)
        (cell,) = plan.pretrain
        s, t = cell.settings, cell.settings["training"]
        vocab, _ = vocab_size(plan.config)
        tokens = t["train_steps"] * t["global_batch_size"] * s["model"]["seq_length"]
        flops = flops_per_token(s["model"], s["model"]["seq_length"], vocab) * tokens
        peak, _ = peak_flops(ASSUMED_GPU, "bf16")
        want = flops / (MFU * peak * gpus) / 3600
        got[gpus] = hours(row.detail)
        assert _within_rounding(got[gpus], want), (gpus, row.detail, want)
        assert f"of {gpus} × " in row.detail
        assert row.problem == (want > limit_h), (gpus, row)
    assert got[1] / got[4] == pytest.approx(4, rel=0.005) and got[1] / got[8] == pytest.approx(8, rel=0.005)
    assert got[8] < limit_h < got[4]  # the cell needs two nodes to fit the profile's runtime


def _finetune_config(gpus: int, max_steps: int | None = None) -> dict:
    c = copy.deepcopy(PAPER)
    c["pretrain"]["grid"] = {"0.5b": ["gqa"]}
    c["finetune"]["grid"] = [{"models": ["mistral-small-24b"], "methods": ["full"], "tasks": ["openo1"]}]
    c["finetune"]["parallel"] = {"gpus": gpus}
    if max_steps:
        c["finetune"]["training"]["max_steps"] = max_steps
    return c


def _finetune_row(config: dict, data: Path, results: Path):  # type: ignore[no-untyped-def]
    plan = expand(config)
    resolved = Resolved({"finetune.models.mistral-small-24b": hf_config("mistralai/Mistral-Small-24B-Base-2501")},
                        {"finetune.tasks.openo1": [str(data)]})
    (row,) = [r for r in runtime_rows(plan, resolved, PROFILE, results, mfu=MFU) if r.cell.startswith("finetune")]
    (cell,) = plan.finetune
    return row, cell


@pytest.mark.parametrize("max_steps", [None, 400], ids=["epochs", "max_steps"])
def test_finetuning_estimate_scales_with_the_gpus(tmp_path: Path, max_steps: int | None) -> None:
    rows_in_data = 20_000
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n' * rows_in_data)
    n = from_hf_config(hf_config("mistralai/Mistral-Small-24B-Base-2501")).total
    peak, _ = peak_flops(ASSUMED_GPU, "bf16")
    got = {}
    for gpus in LAYOUTS:
        row, cell = _finetune_row(_finetune_config(gpus, max_steps), data, tmp_path / "no-records")
        t, task = cell.settings["training"], cell.settings["task_settings"]
        if max_steps:  # one batch per GPU per step
            samples = max_steps * t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] * gpus
        else:
            samples = math.ceil(t["num_train_epochs"] * rows_in_data * (1 - (task.get("val_size") or 0)))
        want = 8 * n * samples * t["cutoff_len"] / (MFU * peak * gpus) / 3600  # full fine-tuning: 8·N per token
        got[gpus] = hours(row.detail)
        assert _within_rounding(got[gpus], want), (gpus, row.detail, want)
        assert f"{samples:,} samples" in row.detail and f"of {gpus} × " in row.detail
    if max_steps:
        assert got[1] == got[4] == got[8]
    else:
        assert got[1] / got[4] == pytest.approx(4, rel=0.005) and got[1] / got[8] == pytest.approx(8, rel=0.005)


def test_a_rate_measured_on_one_gpu_is_not_used_for_more(tmp_path: Path) -> None:
    """A record's tokens/s is of its own layout: a 1-GPU measurement predicts the 1-GPU cell only."""
    one = expand(_pretrain_config(1)).pretrain[0]
    rec = tmp_path / "pretrain" / "0.5b" / "gqa" / "record.parquet"
    rec.parent.mkdir(parents=True)
    pq.write_table(pa.table({"status": ["ok"], "settings_json": [json.dumps(one.settings)],
                             "tokens_per_s": [50_000.0]}), rec)
    for gpus in LAYOUTS:
        (row,) = runtime_rows(expand(_pretrain_config(gpus)), Resolved({}, {}), PROFILE, tmp_path, mfu=MFU)
        if gpus == 1:
            assert "measured 50,000 tokens/s" in row.detail, row.detail
        else:
            assert "tokens/s in" not in row.detail, (gpus, row.detail)  # not the 1-GPU record
            assert f"FLOPs at MFU {MFU:g} of {gpus} × " in row.detail, (gpus, row.detail)
