"""MLA (DeepseekV3ForCausalLM) and MoE (MixtralForCausalLM) exports as the later stages see them,
from their shapes alone: which linear layers int4 quantizes and what their input sizes are
(effbench.quantize.families), the refusal of a group size that does not divide one, the routers
kept unquantized, KV bytes per token per architecture (effbench.inference.kv_cache), and why
vLLM's MLA attention cannot serve a latent it has no kernel for (effbench.inference.engine_choice).
The shapes are the embedded default's xs size (config/config.yaml: pretrain.sizes.xs,
techniques mla and moe); the stage tests check the same against the libraries themselves."""

from __future__ import annotations

import pytest

from effbench.inference import engine_choice
from effbench.inference.kv_cache import kv_bytes_per_token, kv_bytes_per_token_mla, kv_bytes_per_token_of
from effbench.quantize.families import (
    ROUTER_IGNORE,
    export_hf_config,
    family,
    int4_group_problems,
    int4_ignore,
    int4_refusal,
    linear_inputs,
    linear_layers,
)

XS = {"num_layers": 2, "hidden_size": 256, "num_attention_heads": 4, "num_query_groups": 2, "ffn_hidden_size": 512,
      "seq_length": 128}
MLA_TECHNIQUE = {"attention": "mla", "mla": {"q_lora_rank": None, "kv_lora_rank": 64, "qk_head_dim": 64,
                                             "qk_pos_emb_head_dim": 32, "v_head_dim": 64}}
MOE_TECHNIQUE = {"attention": "gqa", "moe": {"num_experts": 8, "router_topk": 2, "aux_loss_coeff": 0.01,
                                             "expert_ffn_hidden_size": 256}}
# config.json as transformers writes it for the exports (the keys that matter)
MLA = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 256,
       "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2, "head_dim": 32,
       "intermediate_size": 512, "q_lora_rank": None, "kv_lora_rank": 64, "qk_nope_head_dim": 64,
       "qk_rope_head_dim": 32, "v_head_dim": 64, "first_k_dense_replace": 2, "n_routed_experts": 8,
       "moe_intermediate_size": 256, "n_shared_experts": 1, "num_experts_per_tok": 2}
MOE = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 256, "num_attention_heads": 4,
       "num_key_value_heads": 2, "head_dim": 64, "num_hidden_layers": 2, "intermediate_size": 256,
       "num_local_experts": 8, "num_experts_per_tok": 2}
LLAMA = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "intermediate_size": 512}
INT4 = {"method": "gptq", "group_size": 128, "symmetric": True, "ignore": ["lm_head"]}


def test_mla_linear_layers_and_their_input_sizes():
    layers = linear_layers(MLA)
    attn = "model.layers.0.self_attn"
    # q without a LoRA rank reads hidden; the KV down-projection reads hidden (its 96 outputs are free);
    # the up-projection reads the latent; o reads heads × v_head_dim.
    assert layers[f"{attn}.q_proj"] == ("hidden_size", 256)
    assert layers[f"{attn}.kv_a_proj_with_mqa"] == ("hidden_size", 256)
    assert layers[f"{attn}.kv_b_proj"] == ("kv_lora_rank", 64)
    assert layers[f"{attn}.o_proj"] == ("num_attention_heads × v_head_dim", 256)
    assert layers["model.layers.0.mlp.down_proj"] == ("intermediate_size", 512)
    assert not any("experts" in n for n in layers)  # first_k_dense_replace = layers: every layer dense
    assert family(MLA) == "mla"
    # with a q LoRA rank: q_a reads hidden, q_b the rank
    q = linear_layers({**MLA, "q_lora_rank": 96})
    assert q[f"{attn}.q_b_proj"] == ("q_lora_rank", 96) and f"{attn}.q_proj" not in q


def test_moe_linear_layers_and_routers():
    layers = linear_layers(MOE)
    assert layers["model.layers.0.mlp.experts.0.gate_proj"] == ("hidden_size", 256)
    assert layers["model.layers.0.mlp.experts.0.down_proj"] == ("intermediate_size", 256)
    assert "model.layers.0.mlp.gate_proj" not in layers  # no dense MLP
    assert family(MOE) == "moe"
    # the router is left unquantized (vLLM builds it unquantized); a dense model gets no extra ignore
    assert int4_ignore(MOE, ["lm_head"]) == ["lm_head", *ROUTER_IGNORE]
    assert int4_ignore(LLAMA, ["lm_head"]) == ["lm_head"]
    # DeepSeek MoE layers from first_k_dense_replace on: routed and shared experts
    ds = linear_layers({**MLA, "first_k_dense_replace": 1})
    assert ds["model.layers.1.mlp.experts.0.down_proj"] == ("moe_intermediate_size", 256)
    assert ds["model.layers.1.mlp.shared_experts.down_proj"] == ("n_shared_experts × moe_intermediate_size", 256)
    assert family({**MLA, "first_k_dense_replace": 1}) == "mla-moe"


def test_int4_group_128_is_refused_for_the_mla_export_with_both_fixes_named():
    why = int4_refusal(MLA, INT4, "model 'xs-mla'")
    assert why is not None
    assert "group_size 128" in why and "kv_lora_rank 64 (kv_b_proj)" in why and "'xs-mla'" in why
    assert "(32, 64)" in why and "'re:.*kv_b_proj$'" in why
    # either fix is accepted
    assert int4_refusal(MLA, {**INT4, "group_size": 64}) is None
    assert int4_refusal(MLA, {**INT4, "ignore": ["lm_head", "re:.*kv_b_proj$"]}) is None
    # an exact module name must be the whole name (as compressed-tensors matches it)
    assert int4_group_problems(MLA, 128, ["kv_b_proj"]) == {"kv_lora_rank": 64}
    # the MoE and dense exports fit the default
    assert int4_refusal(MOE, INT4) is None and int4_refusal(LLAMA, INT4) is None
    assert int4_refusal({**MOE, "intermediate_size": 96}, INT4).startswith("int4 group_size 128 does not divide")


def test_export_settings_map_to_the_hf_shapes():
    """At DAG build the export does not exist yet: its pretraining settings give the same layers."""
    mla = export_hf_config({**XS, **MLA_TECHNIQUE})
    assert linear_layers(mla) == linear_layers(MLA)
    assert int4_refusal(mla, INT4) == int4_refusal(MLA, INT4)
    moe = export_hf_config({**XS, **MOE_TECHNIQUE})
    assert linear_layers(moe) == linear_layers(MOE)
    assert kv_bytes_per_token_of(mla, "bf16") == kv_bytes_per_token_of(MLA, "bf16")
    assert kv_bytes_per_token_of(moe, "bf16") == kv_bytes_per_token_of(MOE, "bf16")
    assert linear_inputs(mla) == {"hidden_size": 256, "kv_lora_rank": 64, "num_attention_heads × v_head_dim": 256,
                                  "intermediate_size": 512}
    assert linear_inputs(mla, ["re:.*kv_b_proj$"]).get("kv_lora_rank") is None


def test_kv_bytes_per_token_per_architecture():
    # MLA: the latent (kv_lora_rank) and the RoPE key (qk_rope_head_dim) per layer, no per-head K and V
    assert kv_bytes_per_token_mla(2, 64, 32, 2) == 2 * 96 * 2 == 384
    assert kv_bytes_per_token_of(MLA, "bf16") == 384  # not 2·L·heads·head_dim from its head_dim 32
    # DeepSeek-V3's own shape: 61 layers × (512 + 64) × 2 bytes
    assert kv_bytes_per_token_of({**MLA, "num_hidden_layers": 61, "kv_lora_rank": 512, "qk_rope_head_dim": 64},
                                 "bf16") == 61 * 576 * 2
    # MoE: attention as its dense layout (GQA, 2 groups × head_dim 64)
    assert kv_bytes_per_token_of(MOE, "bf16") == kv_bytes_per_token(2, 2, 64, 2) == 1024
    # the dense formula unchanged
    assert kv_bytes_per_token_of(LLAMA, "bf16") == 1024


def test_vllm_mla_refuses_a_latent_it_has_no_kernel_for():
    why = engine_choice.mla_unavailable_reason(MLA, [576], "CPU_MLA")
    assert why is not None and "64 + 32 = 96" in why and "576" in why and "CPU_MLA" in why
    big = {**MLA, "kv_lora_rank": 512, "qk_rope_head_dim": 64}
    assert engine_choice.mla_unavailable_reason(big, [576], "CPU_MLA") is None
    assert engine_choice.mla_unavailable_reason(MOE, [576], "CPU_MLA") is None  # not MLA


def test_one_architecture_reason_names_every_precision_once():
    r = "vLLM's MLA attention cannot"
    engine, why = engine_choice.one_engine_per_model("vllm", {"bf16": r, "int4": r})
    assert engine == "transformers" and why == f"served by transformers because bf16, int4 of this model: {r} " \
                                               "(one engine per model)"


def test_the_int4_precision_of_a_model_is_judged_by_its_architecture(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A serving job has its own checkpoint only: the others are judged by name and by its architecture."""
    import json

    d = tmp_path / "bf16"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(MOE))
    monkeypatch.setattr(engine_choice, "int4_unavailable_reason", lambda device: None)
    monkeypatch.setattr(engine_choice, "int4_moe_unavailable_reason", lambda device: "no int4 MoE kernel")
    settings = {"engine": "vllm"}
    engine, why = engine_choice.model_engine(settings, {"bf16": d, "int4": None}, "cpu")
    assert engine == "transformers" and "int4 of this model: no int4 MoE kernel" in why
    assert engine_choice.model_engine(settings, {"bf16": d}, "cpu") == ("vllm", None)  # bf16 alone: vLLM
