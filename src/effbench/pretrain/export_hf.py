"""Export a dense (non-MLA, non-MoE) megatron GPTModel to a Hugging Face checkpoint.

Llama layout (LlamaForCausalLM) without QKV bias, Qwen2 layout (Qwen2ForCausalLM) with
it; both are RMSNorm + SwiGLU + RoPE (rotate-half, like megatron's non-interleaved RoPE).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from effbench.pretrain.model import num_query_groups

_SKIP_TOKENIZER_FILES = {"config.json", "generation_config.json"}


def _get(sd: dict[str, torch.Tensor], *names: str) -> torch.Tensor:
    """First present key among `names` (local spec name first, TE-fused name second)."""
    for n in names:
        if n in sd:
            return sd[n]
    raise KeyError(f"none of {names} in the megatron state dict")


def _split_qkv(
    w: torch.Tensor, heads: int, groups: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split megatron's fused QKV (weight [rows, H] or bias [rows]).

    Rows are interleaved per query group: [q_0 .. q_{heads/groups-1}, k, v] x groups.
    """
    per = heads // groups
    x = w.reshape(groups, per + 2, head_dim, *w.shape[1:])
    q = x[:, :per].reshape(heads * head_dim, *w.shape[1:])
    k = x[:, per].reshape(groups * head_dim, *w.shape[1:])
    v = x[:, per + 1].reshape(groups * head_dim, *w.shape[1:])
    return q, k, v


def _hf_config(settings: dict[str, Any], vocab_size: int, dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    H, n = int(settings["hidden_size"]), int(settings["num_attention_heads"])
    common = dict(
        vocab_size=int(vocab_size),
        hidden_size=H,
        intermediate_size=int(settings["ffn_hidden_size"]),
        num_hidden_layers=int(settings["num_layers"]),
        num_attention_heads=n,
        num_key_value_heads=num_query_groups(settings),
        head_dim=H // n,
        hidden_act="silu",
        max_position_embeddings=int(settings["seq_length"]),
        rms_norm_eps=float(settings.get("norm_epsilon", 1e-6)),
        rope_theta=float(settings.get("rotary_base", 10000.0)),
        tie_word_embeddings=bool(settings.get("tie_embeddings", False)),
        initializer_range=float(settings.get("init_method_std", 0.02)),
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if settings.get("add_qkv_bias"):
        cfg = Qwen2Config(**common, use_sliding_window=False)
        cfg.architectures = ["Qwen2ForCausalLM"]
    else:
        # attention_bias in Llama also adds an o_proj bias, so it stays False here.
        cfg = LlamaConfig(**common, attention_bias=False, mlp_bias=False)
        cfg.architectures = ["LlamaForCausalLM"]
    cfg.dtype = dtype
    return cfg


def convert_state_dict(
    model: torch.nn.Module, settings: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Map megatron parameter names/layouts to HF Llama/Qwen2 names (CPU tensors)."""
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    L, H = int(settings["num_layers"]), int(settings["hidden_size"])
    n, g = int(settings["num_attention_heads"]), num_query_groups(settings)
    d, F = H // n, int(settings["ffn_hidden_size"])

    out: dict[str, torch.Tensor] = {}
    emb = sd["embedding.word_embeddings.weight"]
    out["model.embed_tokens.weight"] = emb
    out["lm_head.weight"] = emb if settings.get("tie_embeddings") else sd["output_layer.weight"]
    out["model.norm.weight"] = sd["decoder.final_layernorm.weight"]
    for i in range(L):
        m, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        # Local spec keeps the norms as modules; TE fuses them into the next linear.
        out[h + "input_layernorm.weight"] = _get(
            sd, m + "input_layernorm.weight", m + "self_attention.linear_qkv.layer_norm_weight"
        )
        out[h + "post_attention_layernorm.weight"] = _get(
            sd, m + "pre_mlp_layernorm.weight", m + "mlp.linear_fc1.layer_norm_weight"
        )
        q, k, v = _split_qkv(sd[m + "self_attention.linear_qkv.weight"], n, g, d)
        out[h + "self_attn.q_proj.weight"] = q
        out[h + "self_attn.k_proj.weight"] = k
        out[h + "self_attn.v_proj.weight"] = v
        if settings.get("add_qkv_bias"):
            qb, kb, vb = _split_qkv(sd[m + "self_attention.linear_qkv.bias"], n, g, d)
            out[h + "self_attn.q_proj.bias"] = qb
            out[h + "self_attn.k_proj.bias"] = kb
            out[h + "self_attn.v_proj.bias"] = vb
        out[h + "self_attn.o_proj.weight"] = sd[m + "self_attention.linear_proj.weight"]
        fc1 = sd[m + "mlp.linear_fc1.weight"]  # [gate; up] for gated_linear_unit
        out[h + "mlp.gate_proj.weight"] = fc1[:F]
        out[h + "mlp.up_proj.weight"] = fc1[F:]
        out[h + "mlp.down_proj.weight"] = sd[m + "mlp.linear_fc2.weight"]
    # Clone: slices of fused tensors share storage, which safetensors refuses.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def export_to_hf(
    model: torch.nn.Module,
    settings: dict[str, Any],
    vocab_size: int,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """Write config.json + model.safetensors (and tokenizer files) loadable offline by
    transformers' AutoModelForCausalLM. Returns the output directory."""
    if settings.get("attention") == "mla" or settings.get("mla"):
        raise ValueError("MLA models are not exportable to a Llama-style HF checkpoint")
    if settings.get("moe"):
        raise ValueError("MoE models are not exportable to a Llama-style HF checkpoint")
    position = settings.get("position_embedding", "rope")
    if position != "rope":
        # Llama / Qwen2 apply rotary embeddings in every attention layer and have no position
        # table, nor a switch to turn positions off: the model would load and compute another function.
        raise ValueError(f"position_embedding {position!r} has no Llama / Qwen2 equivalent (RoPE only); "
                         "leave this technique out of pretrain.export_hf")
    if settings.get("normalization", "RMSNorm") != "RMSNorm":
        raise ValueError("only RMSNorm models map onto Llama / Qwen2 checkpoints")
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = convert_state_dict(model, settings)
    dtype = state["model.embed_tokens.weight"].dtype
    config = _hf_config(settings, vocab_size, dtype)
    if tokenizer_dir is not None:
        _copy_tokenizer(Path(tokenizer_dir), out, config)

    cls = Qwen2ForCausalLM if settings.get("add_qkv_bias") else LlamaForCausalLM
    hf = cls(config).to(dtype)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # With tied embeddings HF may not list lm_head.weight as a separate key.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"HF export mismatch: missing={missing} unexpected={unexpected}")
    hf.save_pretrained(out)
    return out


def _copy_tokenizer(src: Path, dst: Path, config: Any) -> None:
    """Copy tokenizer files and record bos/eos/pad ids in the model config."""
    for f in src.iterdir():
        if f.is_file() and f.name not in _SKIP_TOKENIZER_FILES and f.suffix not in (
            ".safetensors",
            ".bin",
        ):
            shutil.copy2(f, dst / f.name)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(src))
    except Exception:  # unreadable tokenizer: files are still copied
        return
    config.bos_token_id = tok.bos_token_id
    config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
