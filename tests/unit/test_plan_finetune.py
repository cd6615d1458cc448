"""The fine-tuning memory planner (pure arithmetic) and the fine-tuning layout in the config.

The counts and bytes against a real LlamaFactory model are in tests/finetune/test_plan_finetune.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from effbench import config as cfg
from effbench.plan.finetune import GB, Cell, FinetuneVerdict, Zero, estimate, finetune_memory_verdicts
from effbench.plan.ft_shape import Shape, trainable_params

ROOT = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # the DeepSpeed paths of paper.yaml are relative to the working directory


def paper_shape(model: str) -> Shape:
    return Shape.from_config(PAPER["finetune"]["models"][model]["shape"])


@pytest.mark.parametrize("model,params", [
    ("llama-3.2-1b", 1_235_814_400), ("llama-3.1-8b", 8_030_261_248), ("qwen2.5-7b", 7_615_616_512),
    ("qwen2.5-14b", 14_770_033_664), ("mistral-small-24b", 23_572_403_200)])
def test_parameter_counts_match_the_published_models(model, params):
    """The model cards' (safetensors) parameter counts, from each config.json's shape."""
    assert paper_shape(model).total_params() == params


def test_trainable_parameters_per_method():
    s = paper_shape("llama-3.2-1b")  # 16 layers, H 2048, q 2048, kv 512, F 8192
    per_layer_in_out = (2048 + 2048) + 2 * (2048 + 512) + (2048 + 2048) + 2 * (2048 + 8192) + (8192 + 2048)
    lora = {"finetuning_type": "lora", "lora_rank": 64, "lora_target": "all"}
    assert trainable_params(s, lora) == 16 * 64 * per_layer_in_out
    dora_extra = 16 * (2048 + 512 + 512 + 2048 + 8192 + 8192 + 2048)  # a magnitude per output feature
    assert trainable_params(s, {**lora, "use_dora": True}) == 16 * 64 * per_layer_in_out + dora_extra
    assert trainable_params(s, {**lora, "lora_target": "q_proj,v_proj"}) == 16 * 64 * ((2048 + 2048) + (2048 + 512))
    assert trainable_params(s, {"finetuning_type": "freeze", "freeze_trainable_layers": 2}) == 2 * s.layer_params()
    assert trainable_params(s, {"finetuning_type": "full"}) == s.total_params()


def _cell(zero: Zero, gpus: int = 4, model: str = "mistral-small-24b", method: dict | None = None) -> Cell:
    s, method = paper_shape(model), method or {"finetuning_type": "full"}
    return Cell(shape=s, trainable=trainable_params(s, method), adapter=method["finetuning_type"] == "lora",
                precision="bf16",
                gpus=gpus, zero=zero, micro_batch=1, tokens_per_sample=2048, checkpointing=True)


def test_zero_stages_shard_the_states_over_the_gpus():
    n = paper_shape("mistral-small-24b").total_params()
    z3 = estimate(_cell(Zero(3)))
    assert z3.gpu["weights"] == 2 * n / 4 and z3.gpu["grads"] == 2 * n / 4
    assert z3.gpu["optimizer"] == 12 * n / 4  # fp32 master + AdamW m and v
    z2 = estimate(_cell(Zero(2)))
    assert z2.gpu["weights"] == 2 * n and z2.gpu["optimizer"] == 12 * n / 4
    assert estimate(_cell(Zero(3), gpus=8)).gpu["optimizer"] == 12 * n / 8
    # ZeRO-3 alone: 16 B/param over 4 GPUs = 94 GB of states per GPU, over a GH200's 96 GB.
    assert z3.peak / GB > 96
    off = estimate(_cell(Zero(3, offload_optimizer=True)))
    assert off.gpu["optimizer"] == 0 and off.peak / GB < 40
    # Offloaded fp32 master, moments and gradients: 16 B/param on the host, ~377 GB (the issue's ~380 GB).
    assert off.host["offloaded_optimizer"] == 16 * n and 370 < off.host["offloaded_optimizer"] / GB < 380
    both = estimate(_cell(Zero(3, offload_optimizer=True, offload_param=True)))
    assert both.gpu["weights"] == 0 and both.host["offloaded_params"] == 2 * n


def test_without_deepspeed_lora_keeps_frozen_weights_in_bf16_and_trains_fp32():
    lora = {"finetuning_type": "lora", "lora_rank": 64, "lora_target": "all"}
    c = _cell(Zero(), gpus=1, method=lora)
    e = estimate(c)
    n, t = c.shape.total_params(), c.trainable
    assert e.gpu["weights"] == 2 * n + 4 * t and e.gpu["grads"] == 4 * t and e.gpu["optimizer"] == 8 * t
    assert estimate(_cell(Zero(), gpus=4, method=lora)).gpu["grads"] == 8 * t  # + DDP's gradient buckets
    # Without ZeRO-3 every rank builds the whole bf16 model on the host first.
    assert estimate(_cell(Zero(), gpus=4, method=lora)).host["load"] == 4 * 2 * n
    freeze = _cell(Zero(), gpus=1, method={"finetuning_type": "freeze", "freeze_trainable_layers": 2})
    assert estimate(freeze).gpu["weights"] == 2 * (n - freeze.trainable) + 4 * freeze.trainable


def test_every_paper_finetune_cell_fits_a_4_gpu_gh200_node(in_repo):
    """96 GB per GPU, the profile's host memory of a fine-tuning job (cluster.host_memory_gb)."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    host_gb = profile["set-resources"]["finetune"]["mem_mb"] / 1000
    assert PAPER["cluster"]["host_memory_gb"] == host_gb
    verdicts = finetune_memory_verdicts(cfg.plan(PAPER).config, host_memory_gb=host_gb)
    assert len(verdicts) == 98
    assert all(isinstance(v, FinetuneVerdict) and v.fits for v in verdicts), \
        [v.message() for v in verdicts if not v.fits]
    full24 = next(v for v in verdicts if v.cell == "mistral-small-24b/openo1/full")
    assert "ZeRO-3 + offload optimizer" in full24.message() and full24.host_gb > 370
    small = next(v for v in verdicts if v.cell == "llama-3.2-1b/openo1/full")
    assert "offload" not in small.message()  # offload only where it is needed


def test_the_24b_full_finetune_without_offload_names_the_remedy(in_repo):
    c = copy.deepcopy(PAPER)
    c["finetune"]["models"]["mistral-small-24b"]["overrides"] = {}  # the method's ZeRO-3 without offload
    (v,) = [v for v in finetune_memory_verdicts(cfg.plan(c).config) if v.cell == "mistral-small-24b/openo1/full"]
    assert not v.fits and v.predicted_gb > 96
    assert "it would fit with a DeepSpeed config of ZeRO-3 + offload optimizer" in v.message()
    # ... and with the profile's old 200 GB of host memory nothing fits on one node
    (v,) = [v for v in finetune_memory_verdicts(cfg.plan(c).config, host_memory_gb=200)
            if v.cell == "mistral-small-24b/openo1/full"]
    assert not v.fits and "nothing the planner knows fits" in v.message()


def test_a_model_without_a_local_config_or_shape_is_not_planned(in_repo, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    c = copy.deepcopy(PAPER)
    del c["finetune"]["models"]["qwen2.5-7b"]["shape"]
    verdicts = [v for v in finetune_memory_verdicts(cfg.plan(c).config) if v.cell.startswith("qwen2.5-7b/")]
    assert len(verdicts) == 14 and not any(v.fits for v in verdicts)  # never a silent pass
    assert "not planned: no config.json of Qwen/Qwen2.5-7B" in verdicts[0].message()
    assert "finetune.models.qwen2.5-7b.shape" in verdicts[0].message()


def test_a_cached_config_json_is_read(in_repo, monkeypatch, tmp_path):
    snap = tmp_path / "hub" / "models--Qwen--Qwen2.5-7B" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    shape = {**PAPER["finetune"]["models"]["qwen2.5-7b"]["shape"], "num_hidden_layers": 2}
    (snap / "config.json").write_text(json.dumps(shape))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (v,) = [v for v in finetune_memory_verdicts(cfg.plan(PAPER).config) if v.cell == "qwen2.5-7b/openo1/lora"]
    assert str(snap / "config.json") in v.message() and v.estimate.params < 2e9


def test_finetune_gpus_default_override_and_launch():
    d = cfg.plan(DEFAULT)
    assert all(c.settings["parallel"] == {"gpus": 1} for c in d.finetune)
    p = cfg.plan(PAPER).finetune
    assert {c.settings["parallel"]["gpus"] for c in p} == {4}
    c = copy.deepcopy(PAPER)
    c["finetune"]["models"]["llama-3.2-1b"]["gpus"] = 1
    cells = {x.name: x.settings for x in cfg.plan(c).finetune}
    assert cells["llama-3.2-1b/openo1/lora"]["parallel"] == {"gpus": 1}
    assert cells["llama-3.1-8b/openo1/lora"]["parallel"] == {"gpus": 4}
    one = cfg.finetune_layout(cells["llama-3.2-1b/openo1/lora"])
    assert cfg.launch_command("py", one) == "py"
    # DeepSpeed needs a process group: torchrun even for one GPU (LlamaFactory's FORCE_TORCHRUN)
    full = cells["llama-3.2-1b/openo1/full"]
    assert cfg.deepspeed_config(full) == "config/deepspeed/ds_z3.json"
    assert cfg.launch_command("py", cfg.finetune_layout(full), torchrun=cfg.deepspeed_config(full) is not None) == \
        "py -m effbench.torchrun --standalone --nnodes=1 --nproc-per-node=1"
    assert cfg.launch_command("py", cfg.finetune_layout(cells["llama-3.1-8b/openo1/lora"])) == \
        "py -m effbench.torchrun --standalone --nnodes=1 --nproc-per-node=4"
    assert cfg.gpu_resources("cuda", cfg.finetune_layout(cells["llama-3.1-8b/openo1/lora"])) == {"gpu": 4}
