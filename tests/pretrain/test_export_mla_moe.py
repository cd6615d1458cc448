"""Megatron MLA -> DeepseekV3ForCausalLM and megatron MoE -> MixtralForCausalLM: transformers
loads the export offline and reproduces the megatron model's logits (fp32, CPU, max abs
difference < 1e-4 on logits of magnitude ~1-10, after a few AdamW steps so no weight is at its
initial value)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

VOCAB = 512
TOL = 1e-4

MLA = dict(q_lora_rank=48, kv_lora_rank=32, qk_head_dim=64, qk_pos_emb_head_dim=32, v_head_dim=64)
MOE = dict(num_experts=4, router_topk=2, aux_loss_coeff=0.01, expert_ffn_hidden_size=128)


def _trained(settings: dict[str, Any], steps: int = 3) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from effbench.pretrain.model import build_gpt_model

    torch.manual_seed(0)
    model = build_gpt_model(settings, VOCAB, "cpu")
    # megatron initialises norms to 1: make them non-trivial so a wrong norm mapping shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 32), generator=g)
    pos = torch.arange(32).unsqueeze(0).expand(2, -1)
    for _ in range(steps):
        loss = model(input_ids=ids, position_ids=pos, attention_mask=None, labels=ids).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), ids, pos


def _roundtrip(model: torch.nn.Module, settings: dict[str, Any], ids: torch.Tensor, pos: torch.Tensor,
               out: Path, arch: str) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from effbench.pretrain.export_hf import export_to_hf

    export_to_hf(model, settings, VOCAB, out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [arch]
    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == arch
    with torch.no_grad():
        ref = model(input_ids=ids, position_ids=pos, attention_mask=None)  # [b, s, V]
        got = hf(input_ids=ids).logits
    assert got.shape == ref.shape == (2, 32, VOCAB)
    assert ref.abs().max().item() > 0.5  # not a degenerate model
    assert (got - ref).abs().max().item() < TOL
    return cfg


def test_mla_export_roundtrip_logits(dist_env: Any, tiny_settings: Any, tmp_path: Path) -> None:
    settings = tiny_settings(attention="mla", mla=MLA, tie_embeddings=True, rotary_base=500000.0)
    model, ids, pos = _trained(settings)
    cfg = _roundtrip(model, settings, ids, pos, tmp_path / "hf", "DeepseekV3ForCausalLM")
    assert (cfg["q_lora_rank"], cfg["kv_lora_rank"]) == (48, 32)
    assert (cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]) == (64, 32, 64)
    assert cfg["first_k_dense_replace"] == cfg["num_hidden_layers"] == 2
    assert cfg["rope_interleave"] is True
    # vLLM's DeepSeek class ignores tied embeddings, so lm_head is written out.
    assert cfg["tie_word_embeddings"] is False


@pytest.mark.parametrize("q_lora_rank", [None, 48])
def test_mla_exportable_matches_the_built_model(dist_env: Any, tiny_settings: Any, tmp_path: Path,
                                                q_lora_rank: int | None) -> None:
    """`exportable` (no torch) predicts whether model.py builds the kv latent norm DeepseekV3 needs;
    without it the export stops and says why."""
    from effbench.pretrain.export_hf import export_to_hf, exportable
    from effbench.pretrain.model import build_gpt_model

    settings = tiny_settings(attention="mla", mla={**MLA, "q_lora_rank": q_lora_rank})
    model = build_gpt_model(settings, VOCAB, "cpu")
    has_norm = any(k.endswith("self_attention.kv_layernorm.weight") for k in model.state_dict())
    assert (exportable(settings) is None) == has_norm == (q_lora_rank is not None)
    if not has_norm:
        with pytest.raises(ValueError, match=r"\(mla\) not exportable: .*kv_a_layernorm.*exportable: dense"):
            export_to_hf(model, settings, VOCAB, tmp_path / "hf")
        assert not (tmp_path / "hf").exists()


def test_moe_export_roundtrip_logits(dist_env: Any, tiny_settings: Any, tmp_path: Path) -> None:
    settings = tiny_settings(attention="gqa", num_query_groups=2, moe=MOE, tie_embeddings=True)
    model, ids, pos = _trained(settings)
    assert model.config.moe_router_pre_softmax is False  # top-k of logits, then softmax over those k

    used: list[torch.Tensor] = []
    hooks = [layer.mlp.router.register_forward_hook(lambda _m, _i, o: used.append(o[1].any(0)))
             for layer in model.decoder.layers]
    cfg = _roundtrip(model, settings, ids, pos, tmp_path / "hf", "MixtralForCausalLM")
    for h in hooks:
        h.remove()
    # Every layer sent tokens to several experts in the compared forward pass.
    assert len(used) == 2 and all(int(u.sum()) >= 3 for u in used), used
    assert (cfg["num_local_experts"], cfg["num_experts_per_tok"]) == (4, 2)
    assert cfg["intermediate_size"] == 128 and cfg["num_key_value_heads"] == 2
    assert cfg["router_aux_loss_coef"] == 0.01
    from safetensors import safe_open

    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    # The checkpoint names experts as Mixtral checkpoints (and vLLM's loader) do.
    assert "model.layers.0.block_sparse_moe.experts.3.w1.weight" in keys, sorted(keys)[:20]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(attention="gqa", num_query_groups=2, moe=MOE, add_qkv_bias=True),
         "Mixtral's attention has no q/k/v bias"),
        (dict(attention="mla", mla=MLA, moe=MOE), "MLA with MoE experts is not mapped"),
    ],
    ids=["moe-qkv-bias", "mla-moe"],
)
def test_export_refuses_unmapped_families(tiny_settings: Any, tmp_path: Path, overrides: dict, match: str) -> None:
    from effbench.pretrain.export_hf import export_to_hf

    with pytest.raises(ValueError, match=rf"not exportable: .*{match}.*exportable: dense mha/mqa/gqa"):
        export_to_hf(torch.nn.Linear(1, 1), tiny_settings(**overrides), VOCAB, tmp_path)
