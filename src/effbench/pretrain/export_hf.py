"""Export a megatron GPTModel to a Hugging Face checkpoint (the entry point; one module per family).

- dense MHA / MQA / GQA: Llama layout (LlamaForCausalLM) without QKV bias, Qwen2 layout
  (Qwen2ForCausalLM) with it; both are RMSNorm + SwiGLU + RoPE (rotate-half, like megatron's
  non-interleaved RoPE). Mapped here.
- MLA: DeepseekV3ForCausalLM, every layer dense (export_mla.py).
- MoE: MixtralForCausalLM (export_moe.py).
`exportable(settings)` (export_families.py, importable without torch) gives the reason a model
has no mapping, or None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effbench.plan.families import HF_FAMILIES
from effbench.plan.params import num_query_groups
from effbench.pretrain import export_common as common
from effbench.pretrain.export_families import EXPORTABLE, exportable, family

__all__ = ["EXPORTABLE", "convert_state_dict", "export_to_hf", "exportable", "family"]


def _hf_config(settings: dict[str, Any], vocab_size: int) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    H, n = int(settings["hidden_size"]), int(settings["num_attention_heads"])
    common_kw = dict(
        **common.config_kwargs(settings, vocab_size),
        intermediate_size=int(settings["ffn_hidden_size"]),
        num_key_value_heads=num_query_groups(settings),
        head_dim=H // n,
        rope_theta=float(settings.get("rotary_base", 10000.0)),
    )
    if settings.get("add_qkv_bias"):
        cfg = Qwen2Config(**common_kw, use_sliding_window=False)
        cfg.architectures = ["Qwen2ForCausalLM"]
    else:
        # attention_bias in Llama also adds an o_proj bias, so it stays False here.
        cfg = LlamaConfig(**common_kw, attention_bias=False, mlp_bias=False)
        cfg.architectures = ["LlamaForCausalLM"]
    return cfg


def convert_state_dict(model: torch.nn.Module, settings: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Map a dense model's megatron parameter names/layouts to HF Llama/Qwen2 names (CPU tensors)."""
    sd = common.megatron_state(model)
    out: dict[str, torch.Tensor] = {}
    common.map_embeddings(sd, out, bool(settings.get("tie_embeddings")))
    for i in range(int(settings["num_layers"])):
        m, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        common.map_layer_norms(sd, m, h, out, "self_attention.linear_qkv.layer_norm_weight",
                               "mlp.linear_fc1.layer_norm_weight")
        common.map_gqa_attention(sd, m, h, settings, out)
        common.map_dense_mlp(sd, m, h, int(settings["ffn_hidden_size"]), out)
    return common.finish(out)


def export_to_hf(
    model: torch.nn.Module,
    settings: dict[str, Any],
    vocab_size: int,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """Write config.json + model.safetensors (and tokenizer files) loadable offline by
    transformers' AutoModelForCausalLM. Returns the output directory."""
    reason = exportable(settings)
    if reason is not None:
        what = f"{settings.get('attention')}{', moe' if settings.get('moe') else ''}"
        raise ValueError(f"technique ({what}) not exportable: {reason}; "
                         "leave this technique out of pretrain.export_hf")
    fam = family(settings)
    if fam in HF_FAMILIES:
        from effbench.pretrain.families import export

        return export(model, out_dir, tokenizer_dir)  # type: ignore[arg-type]
    if fam == "deepseek_v3":
        from effbench.pretrain import export_mla

        return export_mla.export(model, settings, vocab_size, out_dir, tokenizer_dir)
    if fam == "mixtral":
        from effbench.pretrain import export_moe

        return export_moe.export(model, settings, vocab_size, out_dir, tokenizer_dir)
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    cls = Qwen2ForCausalLM if fam == "qwen2" else LlamaForCausalLM
    state = convert_state_dict(model, settings)
    return common.save(cls, _hf_config(settings, vocab_size), state, out_dir, tokenizer_dir)
