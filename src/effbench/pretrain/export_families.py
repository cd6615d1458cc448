"""Which Hugging Face class a megatron model exports to, and why a model cannot be exported.

Pure Python (no torch, no megatron, no transformers): the DAG-build check can call
`exportable(settings)` from the driver environment. `settings` is the resolved model section
(what `build_gpt_model` consumes).

Families (each an exact mapping: the exported model computes the megatron model's function):
- dense MHA / MQA / GQA, no q/k/v bias -> LlamaForCausalLM
- dense MHA / MQA / GQA with q/k/v bias -> Qwen2ForCausalLM
- MLA, dense MLP -> DeepseekV3ForCausalLM (every layer dense: first_k_dense_replace = layers)
- MoE (softmax top-k router, no shared expert) with MHA / MQA / GQA, no q/k/v bias
  -> MixtralForCausalLM
- the transformers families (GPT-NeoX, Mamba-2, RWKV) are trained as their own classes
  (`pretrain.families`): GPTNeoXForCausalLM, Mamba2ForCausalLM, RwkvForCausalLM as they are
"""

from __future__ import annotations

from typing import Any

EXPORTABLE = (
    "dense mha/mqa/gqa -> LlamaForCausalLM (Qwen2ForCausalLM with q/k/v bias); "
    "mla with q-LoRA (latent norms) -> DeepseekV3ForCausalLM; "
    "moe with mha/mqa/gqa, no q/k/v bias -> MixtralForCausalLM; all with RoPE and RMSNorm; "
    "family gpt_neox / mamba2 / rwkv -> its own transformers class"
)

# DeepseekV3's q_a/kv_a latent RMSNorms use transformers' default eps whatever the config says
# (vLLM uses rms_norm_eps): only this epsilon gives one function in both.
MLA_LATENT_NORM_EPS = 1e-6


def mla_has_latent_norms(settings: dict[str, Any]) -> bool:
    """Mirrors model.py: megatron gets RMSNorms on the q / kv latents (qk_layernorm) only with
    q-LoRA. tests/pretrain/test_export_mla_moe.py checks this against a built model."""
    mla = settings.get("mla") or {}
    return mla.get("q_lora_rank") is not None


def family(settings: dict[str, Any]) -> str:
    """'llama', 'qwen2', 'deepseek_v3' or 'mixtral' (whether or not it is exportable), or the
    transformers family a model was trained as ('gpt_neox', 'mamba2', 'rwkv')."""
    if settings.get("family") not in (None, "gpt"):
        return str(settings["family"])
    if settings.get("attention") == "mla":
        return "deepseek_v3"
    if settings.get("moe"):
        return "mixtral"
    return "qwen2" if settings.get("add_qkv_bias") else "llama"


def exportable(settings: dict[str, Any]) -> str | None:
    """None when the model maps exactly onto a Hugging Face class; otherwise the reason."""
    if settings.get("family") not in (None, "gpt"):
        return None  # trained as a transformers class already
    kind = settings.get("attention")
    moe = settings.get("moe")
    what = f"{kind}{' + moe' if moe else ''}"
    position = settings.get("position_embedding", "rope")
    if position != "rope":
        # Llama / Qwen2 / DeepSeek-V3 / Mixtral apply rotary embeddings in every attention layer
        # and have no position table, nor a switch to turn positions off.
        return (f"position_embedding {position!r} has no Hugging Face equivalent here (RoPE only); "
                f"exportable: {EXPORTABLE}")
    if settings.get("normalization", "RMSNorm") != "RMSNorm":
        return f"normalization {settings.get('normalization')!r} (RMSNorm only); exportable: {EXPORTABLE}"
    if kind == "mla":
        if moe:
            return (f"{what}: MLA with MoE experts is not mapped (DeepSeek-V3's MoE has a sigmoid router "
                    f"and shared experts); exportable: {EXPORTABLE}")
        if not mla_has_latent_norms(settings):
            return (f"{what} with q_lora_rank null: megatron builds no RMSNorm on the kv latent there, while "
                    "DeepseekV3 (and every MLA class in transformers and vLLM) normalises it (kv_a_layernorm); "
                    f"set mla.q_lora_rank to export; exportable: {EXPORTABLE}")
        if float(settings.get("norm_epsilon", 1e-6)) != MLA_LATENT_NORM_EPS:
            return (f"{what}: norm_epsilon {settings.get('norm_epsilon')} != {MLA_LATENT_NORM_EPS}, the fixed eps of "
                    f"transformers' DeepseekV3 latent norms; exportable: {EXPORTABLE}")
        return None
    if kind not in ("mha", "mqa", "gqa"):
        return f"attention {kind!r} has no Hugging Face mapping; exportable: {EXPORTABLE}"
    if moe and settings.get("add_qkv_bias"):
        return (f"{what} with add_qkv_bias: Mixtral's attention has no q/k/v bias; "
                f"exportable: {EXPORTABLE}")
    return None
