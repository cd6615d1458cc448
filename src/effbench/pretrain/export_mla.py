"""MLA (megatron `multi_latent_attention`) with dense MLPs -> DeepseekV3ForCausalLM.

Every layer is dense (`first_k_dense_replace = num_hidden_layers`, no experts).
Parameter map per layer (megatron local spec name / TE-fused name -> DeepSeek name):
  linear_q_proj                      -> q_proj            (no q-LoRA)
  linear_q_down_proj / q_layernorm / linear_q_up_proj
                                     -> q_a_proj / q_a_layernorm / q_b_proj
  linear_kv_down_proj                -> kv_a_proj_with_mqa  ([kv_lora_rank; rope dims] rows)
  kv_layernorm (linear_kv_up_proj.layer_norm_weight) -> kv_a_layernorm
  linear_kv_up_proj                  -> kv_b_proj         (per head [qk_nope; v] rows)
  linear_proj                        -> o_proj
Both split a head's query/key into [no-position (qk_head_dim); rotary (qk_pos_emb_head_dim)].

RoPE: megatron's MLA RoPE (`_apply_rotary_pos_emb_bshd(multi_latent_attention=True)`) takes the
rotary dims as interleaved pairs: it gathers even then odd dims and rotates halves, the same as
DeepSeek's `rope_interleave=True` (and vLLM's `is_neox_style=False` for DeepSeek), so the weights
are copied without a permutation. The softmax scale is 1/sqrt(qk_head_dim + qk_pos_emb_head_dim)
in both when megatron uses plain RoPE (rope_type "rope": mscale 1); YaRN is not mapped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from effbench.pretrain import export_common as common
from effbench.pretrain.export_families import EXPORTABLE, MLA_LATENT_NORM_EPS


def check_model(model: torch.nn.Module, settings: dict[str, Any]) -> None:
    """Refuse megatron MLA settings DeepseekV3 would compute differently."""
    c = model.config
    if not getattr(c, "multi_latent_attention", False):
        raise ValueError("export_mla: the model has no multi-latent attention")
    if c.rope_type != "rope":
        raise ValueError(f"MLA rope_type {c.rope_type!r}: only plain RoPE is exported (YaRN / mscale not mapped); "
                         f"exportable: {EXPORTABLE}")
    if c.rotary_interleaved or float(getattr(c, "rotary_percent", 1.0)) != 1.0:
        raise ValueError("MLA with rotary_interleaved or rotary_percent != 1 has no DeepseekV3 layout")
    if float(c.layernorm_epsilon) != MLA_LATENT_NORM_EPS:
        raise ValueError(f"MLA norm_epsilon {c.layernorm_epsilon}: transformers' DeepseekV3 latent norms use "
                         f"{MLA_LATENT_NORM_EPS}")
    scale = model.decoder.layers[0].self_attention.softmax_scale
    want = (c.qk_head_dim + c.qk_pos_emb_head_dim) ** -0.5
    if not math.isclose(scale, want, rel_tol=1e-12):
        raise ValueError(f"MLA softmax scale {scale} != 1/sqrt(qk + rope head dim) = {want} (mscale != 1)")


def convert_state_dict(model: torch.nn.Module, settings: dict[str, Any]) -> common.State:
    sd = common.megatron_state(model)
    L, F = int(settings["num_layers"]), int(settings["ffn_hidden_size"])
    q_lora = settings["mla"].get("q_lora_rank")
    out: common.State = {}
    # vLLM's DeepseekV2/V3 ignores tie_word_embeddings: lm_head is always written (a copy).
    common.map_embeddings(sd, out, bool(settings.get("tie_embeddings")))
    for i in range(L):
        m, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        a, ha = m + "self_attention.", h + "self_attn."
        common.map_layer_norms(sd, m, h, out, None, "mlp.linear_fc1.layer_norm_weight")
        if q_lora is None:
            out[ha + "q_proj.weight"] = sd[a + "linear_q_proj.weight"]
        else:
            out[ha + "q_a_proj.weight"] = sd[a + "linear_q_down_proj.weight"]
            out[ha + "q_a_layernorm.weight"] = common.get(sd, a + "q_layernorm.weight",
                                                          a + "linear_q_up_proj.layer_norm_weight")
            out[ha + "q_b_proj.weight"] = sd[a + "linear_q_up_proj.weight"]
        out[ha + "kv_a_proj_with_mqa.weight"] = sd[a + "linear_kv_down_proj.weight"]
        try:
            out[ha + "kv_a_layernorm.weight"] = common.get(sd, a + "kv_layernorm.weight",
                                                           a + "linear_kv_up_proj.layer_norm_weight")
        except KeyError:
            raise ValueError("this MLA model has no RMSNorm on its kv latent (megatron qk_layernorm off), which "
                             "DeepseekV3's kv_a_layernorm always applies; set mla.q_lora_rank to export; "
                             f"exportable: {EXPORTABLE}") from None
        out[ha + "kv_b_proj.weight"] = sd[a + "linear_kv_up_proj.weight"]
        out[ha + "o_proj.weight"] = sd[a + "linear_proj.weight"]
        common.map_dense_mlp(sd, m, h, F, out)
    return common.finish(out)


def hf_config(settings: dict[str, Any], vocab_size: int) -> Any:
    from transformers import DeepseekV3Config

    mla, L, n = settings["mla"], int(settings["num_layers"]), int(settings["num_attention_heads"])
    kw = common.config_kwargs(settings, vocab_size)
    kw["tie_word_embeddings"] = False  # see convert_state_dict
    cfg = DeepseekV3Config(
        **kw,
        intermediate_size=int(settings["ffn_hidden_size"]),
        moe_intermediate_size=int(settings["ffn_hidden_size"]),
        num_key_value_heads=n,  # MLA expands the latent to one key / value per head
        q_lora_rank=None if mla.get("q_lora_rank") is None else int(mla["q_lora_rank"]),
        kv_lora_rank=int(mla["kv_lora_rank"]),
        qk_nope_head_dim=int(mla["qk_head_dim"]),
        qk_rope_head_dim=int(mla["qk_pos_emb_head_dim"]),
        v_head_dim=int(mla["v_head_dim"]),
        # No MoE layer: the expert counts are 0 (DeepseekV3Config takes no None there).
        first_k_dense_replace=L,
        n_routed_experts=0,
        n_shared_experts=0,
        num_experts_per_tok=None,
        n_group=None,
        topk_group=None,
        rope_parameters={"rope_type": "default", "rope_theta": float(settings.get("rotary_base", 10000.0))},
        rope_interleave=True,
        attention_bias=False,
    )
    cfg.architectures = ["DeepseekV3ForCausalLM"]
    return cfg


def export(model: torch.nn.Module, settings: dict[str, Any], vocab_size: int, out_dir: str | Path,
           tokenizer_dir: str | Path | None) -> Path:
    from transformers import DeepseekV3ForCausalLM

    check_model(model, settings)
    state = convert_state_dict(model, settings)
    return common.save(DeepseekV3ForCausalLM, hf_config(settings, vocab_size), state, out_dir, tokenizer_dir)
