"""The paper's other pretraining rows through the real stage script on a CPU: the transformers
families (GPT-NeoX / Pythia, Mamba-2, RWKV) and megatron's GPT with native sparse attention. A
few steps train and write a record, a cell killed after a checkpoint resumes to the
uninterrupted run's weights and training loss (one transformers family and NSA: ``RESUMED``), the HF export reproduces the trained model's
logits (NSA has no HF class: its export is refused, naming why), and the planner's counts equal
the instantiated model's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from effbench import config as cfg
from effbench.data.synthetic import make_pretraining_corpus
from effbench.plan.memory import estimate
from effbench.plan.params import flops_per_token, parameter_counts
from effbench.record import read_records, settings_json
from launch_helpers import KILL_AFTER_SAVE

ROOT = Path(__file__).resolve().parents[2]
FAMILY_CELLS = {"pythia": "gpt_neox", "mamba": "mamba2", "rwkv": "rwkv", "nsa": "gpt"}
VOCAB = 512
# Kill and resume (two more launches of the stage script): once for the transformers families, which
# share one adapter (FamilyLM) and one checkpoint path, and once for megatron's GPT with NSA; the
# dense GPT's resume is tests/pretrain/test_resume.py's. Pythia is the cheapest of the three.
RESUMED = {"pythia", "nsa"}


def settings(technique: str, steps: int = 12) -> dict:
    c = cfg.with_defaults(yaml.safe_load((ROOT / "config" / "extended.yaml").read_text()))
    c["pretrain"]["training"].update(train_steps=steps, warmup_steps=2, checkpoint_interval=4, eval_batches=3,
                                     micro_batch_size=2, global_batch_size=2, warmup_measure_steps=0, threads=1)
    c["pretrain"]["sizes"]["xs"].update(num_layers=2, hidden_size=128, num_attention_heads=2, ffn_hidden_size=256,
                                        seq_length=64)
    c["device"] = "cpu"
    return cfg.pretrain_settings(c, "xs", technique)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    make_pretraining_corpus(d, vocab_size=VOCAB, train_tokens=20_000, val_tokens=2_000, seed=3)
    return d


def run(out: Path, data_dir: Path, s: dict, kill_after_step: int | None = None) -> None:
    cmd = [str(ROOT / "scripts" / "pretrain.py"), "--settings", settings_json(s), "--config-hash", "t",
           "--data-dir", str(data_dir), "--record", str(out / "record.parquet"), "--samples",
           str(out / "samples.parquet"), "--checkpoint", str(out / "model.pt"), "--resume-dir", str(out / "resume")]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    if kill_after_step is None:
        p = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        return
    p = subprocess.run([sys.executable, "-c", KILL_AFTER_SAVE, *cmd], capture_output=True, text=True, timeout=300,
                       env={**env, "KILL_AFTER": str(kill_after_step)})
    assert p.returncode == -9, p.stderr[-3000:]


@pytest.mark.parametrize("technique", list(FAMILY_CELLS))
def test_family_trains_resumes_and_exports(dist_env: object, tmp_path: Path, data_dir: Path, technique: str) -> None:
    from transformers import AutoModelForCausalLM

    from effbench.pretrain.export_hf import export_to_hf
    from effbench.pretrain.families import build_model

    s = settings(technique)
    m = s["model"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(straight, data_dir, s)
    rec = read_records([straight / "record.parquet"]).to_pylist()[0]
    assert rec["status"] == "ok" and rec["model_family"] == FAMILY_CELLS[technique]
    assert "reference PyTorch" in rec["kernel_path"] or "SDPA" in rec["kernel_path"]
    assert rec["params_total"] == parameter_counts(m, VOCAB)["total"]
    assert rec["flops_per_token"] == flops_per_token(m, 64, vocab_size=VOCAB)
    assert rec["ppl"] > 1 and rec["ppl__ci_low"] <= rec["ppl"] <= rec["ppl__ci_high"]
    assert rec["steps"] == 12 and rec["mfu_frac"] is None and rec["mfu_frac__missing"]

    if technique in RESUMED:
        # Killed right after the checkpoint at step 8: resumed, it ends where the straight run ends.
        run(interrupted, data_dir, s, kill_after_step=8)
        assert not (interrupted / "record.parquet").exists()
        run(interrupted, data_dir, s)
        again = read_records([interrupted / "record.parquet"]).to_pylist()[0]
        assert again["resumed_from_step"] == 8 and again["steps"] == 4
        assert again["train_loss"] == pytest.approx(rec["train_loss"], abs=1e-6)
        a = torch.load(straight / "model.pt", weights_only=False)["model"]
        b = torch.load(interrupted / "model.pt", weights_only=False)["model"]
        for k, v in a.items():
            torch.testing.assert_close(v, b[k], rtol=1e-5, atol=1e-6, msg=k)

    # The export is the transformers class itself: the same logits as the trained model.
    state = torch.load(straight / "model.pt", weights_only=False)
    model = build_model(state["model_settings"], state["vocab_size"], "cpu")
    model.load_state_dict(state["model"])
    model.eval()
    if technique == "nsa":
        with pytest.raises(ValueError, match="attention 'nsa' has no Hugging Face mapping"):
            export_to_hf(model, state["model_settings"], VOCAB, tmp_path / "hf")
        return
    export_to_hf(model, state["model_settings"], VOCAB, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, model(ids), rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == FAMILY_CELLS[technique]


@pytest.mark.parametrize("technique", ["pythia", "mamba", "rwkv"])
def test_planner_counts_equal_the_instantiated_model(technique: str) -> None:
    from effbench.pretrain.families import build_model, count_parameters

    s = settings(technique)
    torch.manual_seed(0)
    model = build_model(s["model"], VOCAB, "cpu")
    assert count_parameters(model, VOCAB) == parameter_counts(s["model"], VOCAB)  # type: ignore[arg-type]
    est = estimate(s, VOCAB)
    assert est.states["weights"] == sum(p.numel() * 4 for p in model.parameters())
    assert est.states["optimizer"] == 8 * sum(p.numel() for p in model.parameters())  # AdamW m, v in fp32
