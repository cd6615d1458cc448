"""Pieces every megatron -> Hugging Face export family shares: state-dict access, the embeddings,
norms, GQA attention and SwiGLU MLP mappings, the common config keys, and the save itself."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from effbench.plan.params import num_query_groups

_SKIP_TOKENIZER_FILES = {"config.json", "generation_config.json"}

State = dict[str, torch.Tensor]


def megatron_state(model: torch.nn.Module) -> State:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}


def get(sd: State, *names: str) -> torch.Tensor:
    """First present key among `names` (local spec name first, TE-fused name second)."""
    for n in names:
        if n in sd:
            return sd[n]
    raise KeyError(f"none of {names} in the megatron state dict")


def split_qkv(
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


def map_embeddings(sd: State, out: State, tied: bool) -> None:
    """Token embedding, output layer (the embedding itself when tied) and final norm."""
    emb = sd["embedding.word_embeddings.weight"]
    out["model.embed_tokens.weight"] = emb
    out["lm_head.weight"] = emb if tied else sd["output_layer.weight"]
    out["model.norm.weight"] = sd["decoder.final_layernorm.weight"]


def map_layer_norms(sd: State, m: str, h: str, out: State, fused_input: str | None, fused_mlp: str | None) -> None:
    """The two per-layer RMSNorms. The local spec keeps them as modules; TE fuses them into the
    next linear (`fused_input` / `fused_mlp`: that linear's layer_norm_weight key under `m`, None
    where the TE spec keeps a separate norm)."""
    out[h + "input_layernorm.weight"] = get(sd, *[m + n for n in ("input_layernorm.weight", fused_input) if n])
    out[h + "post_attention_layernorm.weight"] = get(sd, *[m + n for n in ("pre_mlp_layernorm.weight", fused_mlp) if n])


def map_gqa_attention(sd: State, m: str, h: str, settings: dict[str, Any], out: State) -> None:
    """megatron's fused linear_qkv (+ bias) and linear_proj -> q/k/v/o_proj."""
    H, n, g = int(settings["hidden_size"]), int(settings["num_attention_heads"]), num_query_groups(settings)
    d = H // n
    q, k, v = split_qkv(sd[m + "self_attention.linear_qkv.weight"], n, g, d)
    out[h + "self_attn.q_proj.weight"] = q
    out[h + "self_attn.k_proj.weight"] = k
    out[h + "self_attn.v_proj.weight"] = v
    if settings.get("add_qkv_bias"):
        qb, kb, vb = split_qkv(sd[m + "self_attention.linear_qkv.bias"], n, g, d)
        out[h + "self_attn.q_proj.bias"] = qb
        out[h + "self_attn.k_proj.bias"] = kb
        out[h + "self_attn.v_proj.bias"] = vb
    out[h + "self_attn.o_proj.weight"] = sd[m + "self_attention.linear_proj.weight"]


def map_dense_mlp(sd: State, m: str, h: str, ffn: int, out: State) -> None:
    """SwiGLU: megatron's linear_fc1 = [gate; up] -> gate_proj, up_proj; linear_fc2 -> down_proj."""
    fc1 = sd[m + "mlp.linear_fc1.weight"]
    out[h + "mlp.gate_proj.weight"] = fc1[:ffn]
    out[h + "mlp.up_proj.weight"] = fc1[ffn:]
    out[h + "mlp.down_proj.weight"] = sd[m + "mlp.linear_fc2.weight"]


def finish(out: State) -> State:
    # Clone: slices of fused tensors share storage, which safetensors refuses.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def config_kwargs(settings: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """Config keys every family shares (names as transformers' Llama / Mixtral / DeepseekV3 take them)."""
    return dict(
        vocab_size=int(vocab_size),
        hidden_size=int(settings["hidden_size"]),
        num_hidden_layers=int(settings["num_layers"]),
        num_attention_heads=int(settings["num_attention_heads"]),
        hidden_act="silu",
        max_position_embeddings=int(settings["seq_length"]),
        rms_norm_eps=float(settings.get("norm_epsilon", 1e-6)),
        tie_word_embeddings=bool(settings.get("tie_embeddings", False)),
        initializer_range=float(settings.get("init_method_std", 0.02)),
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def save(cls: Any, config: Any, state: State, out_dir: str | Path, tokenizer_dir: str | Path | None) -> Path:
    """Load `state` into a fresh `cls(config)` (every key must match) and save_pretrained it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = state["model.embed_tokens.weight"].dtype
    config.dtype = dtype
    if tokenizer_dir is not None:
        copy_tokenizer(Path(tokenizer_dir), out, config)
    hf = cls(config).to(dtype)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # With tied embeddings HF may not list lm_head.weight as a separate key.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"HF export mismatch: missing={missing} unexpected={unexpected}")
    hf.save_pretrained(out)
    return out


def copy_tokenizer(src: Path, dst: Path, config: Any) -> None:
    """Copy tokenizer files and record bos/eos/pad ids in the model config."""
    for f in src.iterdir():
        if f.is_file() and f.name not in _SKIP_TOKENIZER_FILES and f.suffix not in (".safetensors", ".bin"):
            shutil.copy2(f, dst / f.name)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(src))
    except Exception:  # unreadable tokenizer: files are still copied
        return
    config.bos_token_id = tok.bos_token_id
    config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
