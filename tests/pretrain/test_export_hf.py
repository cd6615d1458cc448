"""Megatron -> Hugging Face export: transformers loads it offline and reproduces the logits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

VOCAB = 512


@pytest.mark.parametrize(
    ("overrides", "arch"),
    [
        ({"attention": "gqa", "num_query_groups": 2}, "LlamaForCausalLM"),
        (
            dict(attention="gqa", num_query_groups=2, add_qkv_bias=True, tie_embeddings=True),
            "Qwen2ForCausalLM",
        ),
    ],
    ids=["llama-gqa", "qwen2-gqa-bias-tied"],
)
def test_export_roundtrip_logits(
    dist_env: Any, tiny_settings: Any, tmp_path: Path, overrides: dict[str, Any], arch: str
) -> None:
    from transformers import AutoModelForCausalLM

    from effbench.pretrain.export_hf import export_to_hf
    from effbench.pretrain.model import build_gpt_model

    settings = tiny_settings(**overrides, rotary_base=500000.0)
    torch.manual_seed(0)
    model = build_gpt_model(settings, VOCAB, "cpu")
    if settings["add_qkv_bias"]:
        # megatron zero-initialises biases; make them non-trivial so the split is tested.
        for name, p in model.named_parameters():
            if name.endswith("linear_qkv.bias"):
                torch.nn.init.normal_(p, std=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 32), generator=g)
    pos = torch.arange(32).unsqueeze(0).expand(2, -1)
    for _ in range(3):
        loss = model(input_ids=ids, position_ids=pos, attention_mask=None, labels=ids).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer_config.json").write_text("{}")
    out = export_to_hf(model, settings, VOCAB, tmp_path / "hf", tokenizer_dir=tok_dir)

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [arch]
    assert cfg["num_key_value_heads"] == 2
    assert (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists()

    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == arch
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids, position_ids=pos, attention_mask=None)  # [b, s, V]
        got = hf(input_ids=ids).logits
    assert got.shape == ref.shape == (2, 32, VOCAB)
    assert (got - ref).abs().max().item() < 1e-4


def test_export_rejects_mla_without_latent_norm(tiny_settings: Any, tmp_path: Path) -> None:
    """MLA with q_lora_rank null has no kv latent norm in megatron; DeepseekV3 always applies one
    (MLA and MoE exports: test_export_mla_moe.py)."""
    from effbench.pretrain.export_hf import export_to_hf

    settings = tiny_settings(attention="mla", mla={"q_lora_rank": None, "kv_lora_rank": 64})
    with pytest.raises(ValueError, match="not exportable.*kv_a_layernorm"):
        export_to_hf(torch.nn.Linear(1, 1), settings, VOCAB, tmp_path)


@pytest.mark.parametrize("position", ["learned_absolute", "sinusoidal", "relative", "none"])
def test_export_refuses_positions_llama_cannot_hold(dist_env: Any, tiny_settings: Any, tmp_path: Path,
                                                    position: str) -> None:
    """Llama / Qwen2 have RoPE in every layer and no position table: another encoding would load
    and compute a different function, so the export stops, naming the setting."""
    from effbench.pretrain.export_hf import export_to_hf
    from effbench.pretrain.model import build_gpt_model

    settings = tiny_settings(attention="gqa", num_query_groups=2, position_embedding=position)
    model = build_gpt_model(settings, VOCAB, "cpu")
    with pytest.raises(ValueError, match=rf"position_embedding '{position}' has no Hugging Face equivalent"):
        export_to_hf(model, settings, VOCAB, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
