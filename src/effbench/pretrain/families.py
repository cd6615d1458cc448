"""The pretraining families megatron-core's GPTModel does not build, from Hugging Face
transformers' own classes: GPT-NeoX (the Pythia architecture), Mamba-2 and RWKV(-4).

`build_model` is the stage's one entry point for every family: megatron's GPT
(`model.build_gpt_model`) or one of these, wrapped in `FamilyLM` so that the training loop,
the evaluation and the resume checkpoints call every family the same way. Each class takes
its fast kernels where they are installed (flash/SDPA attention, mamba_ssm + causal_conv1d,
the RWKV CUDA kernel) and otherwise its reference PyTorch path: `kernel_path` says which ran.
The checkpoint these models save *is* a transformers checkpoint (`export` writes it with
`save_pretrained`), so the exported logits equal the trained model's by construction, and
tests/pretrain/test_families.py checks that they do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from effbench.plan.families import GPT, HF_FAMILIES, family
from effbench.plan.families import parameter_counts as analytic_counts


def hf_config(m: dict[str, Any], vocab_size: int) -> Any:
    """The transformers config of a resolved model section."""
    fam = family(m)
    common = dict(vocab_size=int(vocab_size), hidden_size=int(m["hidden_size"]),
                  num_hidden_layers=int(m["num_layers"]), initializer_range=float(m["init_method_std"]),
                  tie_word_embeddings=bool(m["tie_embeddings"]), use_cache=False)
    if fam == "gpt_neox":
        from transformers import GPTNeoXConfig

        o = m.get("gpt_neox") or {}
        return GPTNeoXConfig(
            **common, num_attention_heads=int(m["num_attention_heads"]), intermediate_size=int(m["ffn_hidden_size"]),
            max_position_embeddings=int(m["seq_length"]), layer_norm_eps=float(m["norm_epsilon"]),
            use_parallel_residual=bool(o.get("parallel_residual", True)), hidden_act="gelu",
            attention_dropout=0.0, hidden_dropout=0.0, attention_bias=True,
            rope_parameters={"rope_type": "default", "rope_theta": float(m["rotary_base"]),
                             "partial_rotary_factor": float(o.get("rotary_pct", 0.25))})
    if fam == "mamba2":
        from transformers import Mamba2Config

        o = m["mamba2"]
        return Mamba2Config(
            **common, state_size=int(o["state_size"]), expand=int(o["expand"]), head_dim=int(o["head_dim"]),
            num_heads=int(o["expand"]) * int(m["hidden_size"]) // int(o["head_dim"]), n_groups=int(o["n_groups"]),
            conv_kernel=int(o["conv_kernel"]), chunk_size=int(o["chunk_size"]),
            layer_norm_epsilon=float(m["norm_epsilon"]), use_bias=False, use_conv_bias=True,
            residual_in_fp32=True, rescale_prenorm_residual=False)
    if fam == "rwkv":
        from transformers import RwkvConfig

        # rescale_every 0: the 'rescale' trick halves hidden states in inference mode only, so
        # the evaluated function would differ from the trained one.
        return RwkvConfig(**common, context_length=int(m["seq_length"]), attention_hidden_size=int(m["hidden_size"]),
                          intermediate_size=int(m["ffn_hidden_size"]), layer_norm_epsilon=float(m["norm_epsilon"]),
                          rescale_every=0)
    raise ValueError(f"family must be one of {HF_FAMILIES} here, got {fam!r}")


def _hf_class(fam: str) -> Any:
    import transformers

    return getattr(transformers, {"gpt_neox": "GPTNeoXForCausalLM", "mamba2": "Mamba2ForCausalLM",
                                  "rwkv": "RwkvForCausalLM"}[fam])


class FamilyLM(torch.nn.Module):
    """A transformers causal LM called like megatron's GPTModel: with labels (already the next
    tokens, as the stage's sampler yields them), the per-token cross entropy [b, s]; without,
    the logits. Positions are the model's own (every family here encodes them itself)."""

    def __init__(self, hf: torch.nn.Module) -> None:
        super().__init__()
        self.hf = hf
        self.config = hf.config

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.hf(input_ids=input_ids).logits
        if labels is None:
            return logits
        b, s, v = logits.shape
        return F.cross_entropy(logits.float().reshape(b * s, v), labels.reshape(b * s), reduction="none").view(b, s)


def build_model(settings: dict[str, Any], vocab_size: int, device: str) -> torch.nn.Module:
    """The model of a resolved model section on `device`, whatever its family."""
    fam = family(settings)
    if fam == GPT:
        from .model import build_gpt_model

        return build_gpt_model(settings, vocab_size, device)
    if settings.get("params_dtype", "float32") != "float32" and torch.device(device).type == "cpu":
        raise ValueError("params_dtype bfloat16 is only supported on GPU")
    hf = _hf_class(fam)(hf_config(settings, vocab_size))
    dtype = torch.bfloat16 if settings.get("params_dtype") == "bfloat16" else torch.float32
    return FamilyLM(hf.to(dtype)).to(device)


def count_parameters(model: FamilyLM, vocab_size: int) -> dict[str, int]:
    """Counts of the instantiated model, in `plan.params.parameter_counts`' keys (shared tensors
    counted once; the embedding is the token table plus an untied output layer)."""
    hf = model.hf
    total = sum(p.numel() for p in hf.parameters())  # parameters() yields a tied tensor once
    emb_in = hf.get_input_embeddings().weight
    out = hf.get_output_embeddings().weight
    embedding = emb_in.numel() + (0 if out is emb_in else out.numel())
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding,
            "active_non_embedding": total - embedding, "output_projection": out.numel()}


def kernel_path(settings: dict[str, Any], device: str) -> str:
    """Which implementation computes the family's token mixing on `device` (for the record)."""
    fam, cuda = family(settings), torch.device(device).type == "cuda"
    if fam == GPT:
        from .model import uses_transformer_engine

        if settings.get("attention") == "nsa":  # its own module, on every device (nsa_attention.py)
            return "megatron-core local + native_sparse_attention_pytorch reference PyTorch"
        return "megatron-core transformer-engine" if uses_transformer_engine(device) else "megatron-core local + torch SDPA"
    if fam == "gpt_neox":
        return "transformers GPTNeoX + torch SDPA"
    if fam == "mamba2":
        from transformers.utils.import_utils import is_causal_conv1d_available, is_mamba_2_ssm_available

        fast = cuda and is_mamba_2_ssm_available() and is_causal_conv1d_available()
        return "transformers Mamba2 + mamba_ssm/causal_conv1d kernels" if fast else \
            "transformers Mamba2 reference PyTorch (chunked SSD)"
    if fam == "rwkv":
        # The class fetches its CUDA kernel from the Hugging Face kernels hub when it can, and
        # otherwise runs its reference loop, on a GPU too: ask the module which it holds.
        from transformers.models.rwkv import modeling_rwkv

        return "transformers RWKV CUDA kernel (kernels-community/rwkv)" if cuda and modeling_rwkv.rwkv_cuda_kernel \
            is not None else "transformers RWKV reference PyTorch (recurrent loop)"
    raise ValueError(f"unknown family {fam!r}")


def check_counts(model: torch.nn.Module, settings: dict[str, Any], vocab_size: int) -> dict[str, int]:
    """The instantiated counts, which must equal the planner's (a mismatch would mis-state MFU)."""
    counted = count_parameters(model, vocab_size)  # type: ignore[arg-type]
    planned = analytic_counts(settings, vocab_size)
    if counted != planned:
        raise RuntimeError(f"{family(settings)}: instantiated parameter counts {counted} != planned {planned}")
    return counted


def export(model: FamilyLM, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write the trained model as its own transformers checkpoint (config + safetensors)."""
    from .export_common import copy_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:  # first: it sets the bos/eos/pad ids the saved config carries
        copy_tokenizer(Path(tokenizer_dir), out, model.hf.config)
    model.hf.save_pretrained(out)
    return out
