"""W8A8 precisions beyond the paper, as llm-compressor recipes (quantization environment).

- ``fp8``: FP8 e4m3 weights, one static scale per output channel, and FP8 input activations
  quantized dynamically per token at run time (compressed-tensors' ``FP8_DYNAMIC`` preset,
  format ``float-quantized``). Round to nearest: no calibration.
- ``int8``: int8 weights, symmetric, one scale per output channel, and int8 input activations
  quantized dynamically per token (the ``W8A8`` preset, format ``int-quantized``). Methods:
  ``smoothquant_gptq`` (SmoothQuant moves activation outliers into the weights, then GPTQ rounds
  them), ``smoothquant_rtn``, ``gptq``, ``rtn``. All but ``rtn`` calibrate on the pipeline's corpus.

SmoothQuant's smoothing maps come from llm-compressor's registry by architecture: Llama-style
dense decoders smooth q/k/v (input norm) and gate/up (post-attention norm); Mixtral and DeepSeek
(MLA) only the attention inputs (one smoothing scale across experts degrades MoE models, and
DeepSeek's attention reads ``q_proj``/``q_a_proj`` and ``kv_a_proj_with_mqa``). Routers and
``ignore`` are left unquantized as for int4 (:func:`.families.int4_ignore`).

How each serves and what it measured: docs/w8a8.md.
"""

from __future__ import annotations

from typing import Any

FP8_METHOD = "fp8_dynamic"  # the record's quant_method for fp8
INT8_METHODS = ("smoothquant_gptq", "smoothquant_rtn", "gptq", "rtn")
PRESETS = {"fp8": "FP8_DYNAMIC", "int8": "W8A8"}  # compressed-tensors preset schemes


def quant_method(precision: str, block: dict[str, Any]) -> str:
    """The record's ``quant_method``: ``fp8_dynamic``, or the int8 method."""
    if precision == "fp8":
        return FP8_METHOD
    method = block["method"]
    if method not in INT8_METHODS:
        raise ValueError(f"unknown int8 method {method!r} (one of {', '.join(INT8_METHODS)})")
    return method


def calibrates(precision: str, block: dict[str, Any]) -> bool:
    """Whether the recipe reads calibration data: int8 with SmoothQuant or GPTQ."""
    return precision == "int8" and block["method"] != "rtn"


def recipe(precision: str, block: dict[str, Any], ignore: list[str]) -> list[Any]:
    """llm-compressor modifiers for ``precision`` (``fp8`` | ``int8``) with its settings ``block``,
    leaving the modules in ``ignore`` unquantized."""
    from compressed_tensors.quantization import preset_name_to_scheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    groups = {"group_0": preset_name_to_scheme(PRESETS[precision], ["Linear"])}
    method = quant_method(precision, block)
    steps: list[Any] = []
    if method.startswith("smoothquant_"):
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        steps.append(SmoothQuantModifier(smoothing_strength=float(block["smoothing_strength"]), ignore=list(ignore)))
    if method.endswith("gptq"):
        steps.append(GPTQModifier(config_groups=groups, ignore=ignore, dampening_frac=block["dampening_frac"]))
    else:
        steps.append(QuantizationModifier(config_groups=groups, ignore=ignore))
    return steps
