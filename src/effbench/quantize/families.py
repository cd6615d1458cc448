"""What int4 (weight-only, groups of input channels) needs to know about a decoder family, from
its shape alone (pure: no torch; the driver can call it at DAG build, the quantize stage before
``oneshot``).

Families handled, by the Hugging Face ``config.json`` they export to:

- dense (Llama / Qwen2 / Mistral: MHA, MQA, GQA): q/k/v and gate/up read ``hidden_size``,
  o ``num_attention_heads × head_dim``, down ``intermediate_size``.
- MLA (``DeepseekV2/V3ForCausalLM``: ``kv_lora_rank`` in the config): ``q_proj`` (or
  ``q_a_proj`` → ``q_b_proj`` with ``q_lora_rank``) and ``kv_a_proj_with_mqa`` read
  ``hidden_size``; ``kv_b_proj`` reads the latent, ``kv_lora_rank``; ``o_proj`` reads
  ``num_attention_heads × v_head_dim``. Layers from ``first_k_dense_replace`` on are MoE.
- MoE (``MixtralForCausalLM``: ``num_local_experts``; DeepSeek's MoE layers: ``n_routed_experts``):
  every expert is a gated MLP (down reads the expert FFN size); the router (``gate``) stays
  unquantized (vLLM builds it unquantized: a quantized router in the checkpoint would not load).

Only a linear layer's *input* size matters for group quantization: each row (output channel)
is split into groups of ``group_size`` input channels, one scale each; output sizes (e.g. MLA's
``kv_a_proj_with_mqa`` output, ``kv_lora_rank + qk_rope_head_dim`` = 96) are free.

Layer names are the in-memory module names llm-compressor matches ``ignore`` against (one
representative per kind of layer: layer 0, and the first MoE layer where it differs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# Router modules of MoE blocks: never quantized (regexes as llm-compressor's ``ignore`` takes them).
ROUTER_IGNORE = (r"re:.*\.mlp\.gate$", r"re:.*\.block_sparse_moe\.gate$")


def _text(c: Mapping[str, Any]) -> Mapping[str, Any]:
    return c.get("text_config") or c


def is_mla(c: Mapping[str, Any]) -> bool:
    return _text(c).get("kv_lora_rank") is not None


def moe_layers(c: Mapping[str, Any]) -> list[int]:
    """Indices of the decoder layers whose MLP is a mixture of experts."""
    c = _text(c)
    n = int(c["num_hidden_layers"])
    if c.get("num_local_experts"):  # Mixtral: every layer
        return list(range(n))
    if c.get("n_routed_experts"):  # DeepSeek: dense below first_k_dense_replace (every moe_layer_freq-th after)
        first, freq = int(c.get("first_k_dense_replace") or 0), int(c.get("moe_layer_freq") or 1)
        return [i for i in range(first, n) if i % freq == 0]
    if c.get("num_experts"):  # Qwen2-MoE style
        return list(range(n))
    return []


def is_moe(c: Mapping[str, Any]) -> bool:
    """Whether any decoder layer of config ``c`` is a mixture of experts (tolerates a partial config)."""
    t = _text(c)
    if "num_hidden_layers" in t:
        return bool(moe_layers(t))
    return bool(t.get("num_local_experts") or t.get("n_routed_experts") or t.get("num_experts"))


def family(c: Mapping[str, Any]) -> str:
    """``mla`` | ``moe`` | ``mla-moe`` | ``dense``."""
    parts = (["mla"] if is_mla(c) else []) + (["moe"] if is_moe(c) else [])
    return "-".join(parts) or "dense"


def linear_layers(c: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """{representative module name: (the config setting that makes its input size, the size)} of
    every kind of linear layer in the decoder of HF config ``c`` (``lm_head`` left out: the
    pipeline keeps it unquantized)."""
    c = _text(c)
    hidden, heads, layers = int(c["hidden_size"]), int(c["num_attention_heads"]), int(c["num_hidden_layers"])
    attn = "model.layers.0.self_attn"
    out: dict[str, tuple[str, int]] = {}
    if is_mla(c):
        if c.get("q_lora_rank"):
            out[f"{attn}.q_a_proj"] = ("hidden_size", hidden)
            out[f"{attn}.q_b_proj"] = ("q_lora_rank", int(c["q_lora_rank"]))
        else:
            out[f"{attn}.q_proj"] = ("hidden_size", hidden)
        out[f"{attn}.kv_a_proj_with_mqa"] = ("hidden_size", hidden)
        out[f"{attn}.kv_b_proj"] = ("kv_lora_rank", int(c["kv_lora_rank"]))
        out[f"{attn}.o_proj"] = ("num_attention_heads × v_head_dim", heads * int(c["v_head_dim"]))
    else:
        head_dim = int(c.get("head_dim") or hidden // heads)
        for p in ("q_proj", "k_proj", "v_proj"):
            out[f"{attn}.{p}"] = ("hidden_size", hidden)
        out[f"{attn}.o_proj"] = (("hidden_size" if heads * head_dim == hidden else "num_attention_heads × head_dim"),
                                 heads * head_dim)
    moe = moe_layers(c)
    dense = [i for i in range(layers) if i not in moe]
    if dense:
        mlp = f"model.layers.{dense[0]}.mlp"
        out[f"{mlp}.gate_proj"] = out[f"{mlp}.up_proj"] = ("hidden_size", hidden)
        out[f"{mlp}.down_proj"] = ("intermediate_size", int(c["intermediate_size"]))
    if moe:
        mlp = f"model.layers.{moe[0]}.mlp"
        if c.get("num_local_experts"):  # Mixtral: experts' FFN is intermediate_size
            expert = ("intermediate_size", int(c["intermediate_size"]))
        else:
            expert = ("moe_intermediate_size", int(c["moe_intermediate_size"]))
        out[f"{mlp}.experts.0.gate_proj"] = out[f"{mlp}.experts.0.up_proj"] = ("hidden_size", hidden)
        out[f"{mlp}.experts.0.down_proj"] = expert
        shared = int(c.get("n_shared_experts") or 0)
        if shared:  # DeepSeek: one MLP of n_shared_experts × moe_intermediate_size
            out[f"{mlp}.shared_experts.gate_proj"] = out[f"{mlp}.shared_experts.up_proj"] = ("hidden_size", hidden)
            out[f"{mlp}.shared_experts.down_proj"] = ("n_shared_experts × moe_intermediate_size",
                                                      shared * int(c["moe_intermediate_size"]))
        elif c.get("shared_expert_intermediate_size"):  # Qwen2-MoE
            out[f"{mlp}.shared_expert.gate_proj"] = out[f"{mlp}.shared_expert.up_proj"] = ("hidden_size", hidden)
            out[f"{mlp}.shared_expert.down_proj"] = ("shared_expert_intermediate_size",
                                                     int(c["shared_expert_intermediate_size"]))
    return out


def export_hf_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """The shape of the HF config the pipeline's export writes for pretraining model settings
    (``num_layers``, ``hidden_size``, ``num_attention_heads``, ``ffn_hidden_size``, ``attention``,
    ``num_query_groups``, ``mla`` {q_lora_rank, kv_lora_rank, qk_head_dim, qk_pos_emb_head_dim,
    v_head_dim}, ``moe`` {num_experts, router_topk, expert_ffn_hidden_size}): MLA as
    ``DeepseekV3ForCausalLM`` with every layer dense, MoE as ``MixtralForCausalLM``. Only the
    keys :func:`linear_layers` and the KV-size functions read."""
    hidden, heads, layers = int(model["hidden_size"]), int(model["num_attention_heads"]), int(model["num_layers"])
    groups = {"mha": heads, "mqa": 1}.get(model.get("attention", "gqa"), model.get("num_query_groups") or heads)
    c: dict[str, Any] = {"hidden_size": hidden, "num_attention_heads": heads, "num_hidden_layers": layers,
                         "num_key_value_heads": int(groups), "head_dim": hidden // heads,
                         "intermediate_size": int(model["ffn_hidden_size"])}
    mla = model.get("mla") if model.get("attention") == "mla" else None
    if mla:
        c.update(model_type="deepseek_v3", q_lora_rank=mla.get("q_lora_rank"), kv_lora_rank=int(mla["kv_lora_rank"]),
                 qk_nope_head_dim=int(mla["qk_head_dim"]), qk_rope_head_dim=int(mla["qk_pos_emb_head_dim"]),
                 v_head_dim=int(mla["v_head_dim"]), first_k_dense_replace=layers, num_key_value_heads=heads)
    moe = model.get("moe")
    if moe:
        c.update(model_type="mixtral", num_local_experts=int(moe["num_experts"]),
                 num_experts_per_tok=int(moe["router_topk"]), intermediate_size=int(moe["expert_ffn_hidden_size"]))
    return c


def _ignored(name: str, ignore: Iterable[str]) -> bool:
    """Whether llm-compressor's ``ignore`` leaves module ``name`` out: as compressed-tensors matches
    it, an exact module name or an ``re:`` regex matched from the start (class names, which it
    also matches, are not known here)."""
    return any(re.match(e[3:], name) is not None if e.startswith("re:") else e == name for e in ignore)


def int4_ignore(c: Mapping[str, Any], ignore: Iterable[str]) -> list[str]:
    """The configured ``ignore`` plus the family's own: MoE routers (:data:`ROUTER_IGNORE`)."""
    out = list(ignore)
    if is_moe(c):
        out += [r for r in ROUTER_IGNORE if r not in out]
    return out


def int4_group_problems(c: Mapping[str, Any], group_size: int, ignore: Iterable[str] = ()) -> dict[str, int]:
    """{setting: input size} of the linear layers int4 quantizes (not in ``ignore``) whose input
    size ``group_size`` does not divide."""
    ignore = list(ignore)
    return {setting: n for name, (setting, n) in linear_layers(c).items()
            if n % group_size and not _ignored(name, ignore)}


def int4_refusal(c: Mapping[str, Any], int4: Mapping[str, Any], model: str = "this model",
                 group_sizes: Iterable[int] = (32, 64, 128)) -> str | None:
    """Why the int4 settings (``group_size``, ``ignore``) cannot quantize a model of HF config
    ``c`` (None: they can). For the config check at DAG build and the quantize stage itself."""
    g = int(int4["group_size"])
    ignore = int4_ignore(c, int4.get("ignore") or ())
    bad = int4_group_problems(c, g, ignore)
    if not bad:
        return None
    layers = linear_layers(c)
    names = sorted({name.rsplit(".", 1)[-1] for name, (s, _) in layers.items()
                    if s in bad and not _ignored(name, ignore)})
    fits = [x for x in group_sizes if not int4_group_problems(c, x, ignore)]
    fix = (f"set quantize.int4.group_size to one that divides them ({', '.join(map(str, fits))})" if fits
           else f"none of {', '.join(map(str, group_sizes))} divides them")
    return (f"int4 group_size {g} does not divide the input size of every linear layer of {model} "
            f"({family(c)}): {', '.join(f'{k} {n}' for k, n in bad.items())} ({', '.join(names)}); {fix}, "
            f"or add {', '.join(repr('re:.*' + re.escape(n) + '$') for n in names)} to quantize.int4.ignore "
            f"to keep those layers in bf16")


def linear_inputs(c: Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, int]:
    """{setting: input size} over the linear layers int4 quantizes: a drop-in for the config's
    ``hf_linear_inputs`` / ``ModelSource.linear_inputs`` that knows MLA and MoE."""
    ignore = int4_ignore(c, ignore)
    return {s: n for name, (s, n) in linear_layers(c).items() if not _ignored(name, ignore)}


# --- W8A8 (fp8, int8: beyond the paper) ----------------------------------------------------------

INT8_METHODS = ("smoothquant_gptq", "smoothquant_rtn", "gptq", "rtn")  # as .w8a8.INT8_METHODS (torch-free here)


def _w8a8_block(settings: Mapping[str, Any], precision: str) -> Mapping[str, Any]:
    """The ``fp8`` / ``int8`` block of a quantize cell's settings, or ``settings`` if it is the block."""
    block = settings.get(precision)
    return block if isinstance(block, Mapping) else settings


def w8a8_refusal(c: Mapping[str, Any], precision: str, block: Mapping[str, Any], model: str = "this model"
                 ) -> str | None:
    """Why ``precision`` (``fp8`` | ``int8``) with settings ``block`` (quantize.fp8 / quantize.int8)
    cannot quantize a model of HF config ``c`` (None: it can). Pure: for the config check at DAG
    build and the quantize stage before ``oneshot``.

    No shape rule: both schemes scale whole output channels (weights) and whole tokens
    (activations), with no groups or blocks, so every dense, MLA and MoE layer tiles, whatever its
    sizes; MLA's latent projections (``kv_b_proj`` reads ``kv_lora_rank``) need no special case,
    unlike int4. Checked against the kernels of vLLM 0.32: on CPU, FP8 runs through
    ``torch._scaled_mm`` (any M, N, K; the AMX-FP8 kernel wants N % 32 == 0 and otherwise yields to
    it) and int8 through oneDNN (any shape; the AMX kernel wants K % 32 == 0 and N % 16 == 0 and
    otherwise yields to oneDNN); on CUDA, CUTLASS pads FP8 weights to multiples of 16 and int8
    falls back to Triton where N or K is not one. Measured: a Llama with hidden 264, FFN 520 (not
    multiples of 16) quantized and served by vLLM on CPU in both schemes. What is refused: settings
    llm-compressor cannot run (an unknown int8 method, a SmoothQuant strength outside [0, 1], a
    calibrating method without calibration windows) and an ``ignore`` that leaves no linear layer
    to quantize."""
    if precision not in ("fp8", "int8"):
        raise ValueError(f"not a W8A8 precision: {precision!r}")
    key = f"quantize.{precision}"
    if precision == "int8":
        method = block.get("method")
        if method not in INT8_METHODS:
            return f"{key}.method {method!r} is not one of {', '.join(INT8_METHODS)}"
        if method.startswith("smoothquant_"):
            alpha = block.get("smoothing_strength")
            if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
                return f"{key}.smoothing_strength {alpha!r} is not within [0, 1] (SmoothQuant's migration strength)"
        if method != "rtn":
            cal = block.get("calibration") or {}
            if int(cal.get("samples") or 0) < 1 or int(cal.get("seq_length") or 0) < 2:
                return (f"{key}.method {method} calibrates on the corpus: {key}.calibration needs samples >= 1 "
                        f"and seq_length >= 2 (has {dict(cal)})")
    ignore = int4_ignore(c, block.get("ignore") or ())
    if not any(not _ignored(name, ignore) for name in linear_layers(c)):
        return f"{key}.ignore leaves no linear layer of {model} ({family(c)}) to quantize"
    return None


def fp8_refusal(c: Mapping[str, Any], settings: Mapping[str, Any], model: str = "this model") -> str | None:
    """:func:`w8a8_refusal` for ``fp8``; ``settings``: the cell's settings or its ``fp8`` block."""
    return w8a8_refusal(c, "fp8", _w8a8_block(settings, "fp8"), model)


def int8_refusal(c: Mapping[str, Any], settings: Mapping[str, Any], model: str = "this model") -> str | None:
    """:func:`w8a8_refusal` for ``int8``; ``settings``: the cell's settings or its ``int8`` block."""
    return w8a8_refusal(c, "int8", _w8a8_block(settings, "int8"), model)
