"""Materialise one model × precision for serving and describe it.

- ``bf16`` / ``fp16``: the model cast to that dtype, saved as safetensors.
- ``int4``: weight-only W4A16 through llm-compressor's ``oneshot`` — ``rtn``
  (``QuantizationModifier``, round to nearest), ``gptq`` (``GPTQModifier``) or ``awq``
  (``AWQModifier``, the paper's toolkit) — with groups of ``group_size`` input channels,
  saved in the compressed-tensors format (``pack-quantized``) that vLLM and transformers
  load. GPTQ and AWQ calibrate on windows of the pipeline's own corpus (offline).

- ``fp8`` / ``int8`` (beyond the paper): W8A8 with per-channel weights and dynamic per-token
  activations (:mod:`.w8a8`): FP8 e4m3 round to nearest, or int8 by SmoothQuant + GPTQ (or
  ``smoothquant_rtn``, ``gptq``, ``rtn``), compressed-tensors ``float-quantized`` /
  ``int-quantized``. int8's SmoothQuant and GPTQ calibrate on the corpus like int4.

Beside the weights goes ``effbench.json`` (precision, nominal bits, logical parameter count,
bytes on disk, method), which the inference and evaluation stages read.

Families (:mod:`.families`): dense Llama/Qwen2-style decoders, MLA (``DeepseekV3ForCausalLM``)
and MoE (``MixtralForCausalLM``). int4 refuses settings whose group size does not divide a
quantized layer's input (:func:`.families.int4_refusal`, e.g. MLA's ``kv_b_proj`` reads
``kv_lora_rank``), leaves MoE routers unquantized, and quantizes every expert (llm-compressor
linearizes the fused experts; a Mixtral checkpoint is saved with its own per-expert
``w1``/``w2``/``w3`` names, which vLLM and transformers read back: :func:`keep_expert_names`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np


from ..measure.monitor import Monitor
from ..record import SIDE_CAR, WINDOW_FIGURES
from . import w8a8
from .families import family, int4_ignore, int4_refusal, is_mla, moe_layers, w8a8_refusal

log = logging.getLogger("effbench.quantize")
DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def source_path(source: dict[str, Any], pretrained_dir: Path | None) -> str:
    """Where ``from_pretrained`` finds the model (an HF id must already be in the local cache)."""
    if source["kind"] == "pretrained":
        if pretrained_dir is None:
            raise ValueError("a pipeline export needs --source-dir")
        return str(pretrained_dir)
    if source["kind"] == "path":
        return str(Path(source["ref"]).expanduser())
    if source["kind"] == "hf":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
        return source["ref"]
    raise ValueError(f"unknown model source {source['kind']!r}")


def safetensors_bytes(model_dir: Path) -> int:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    return sum(f.stat().st_size for f in files)


def calibration_texts(data_dir: Path, samples: int, seq_length: int, seed: int) -> list[str]:
    """``samples`` windows of the pipeline corpus' training split, decoded to text.

    Decoding to text lets any model's own tokenizer re-tokenize them (a pipeline export
    shares the corpus tokenizer; a Hugging Face model does not).
    """
    from tokenizers import Tokenizer

    meta = json.loads((data_dir / "meta.json").read_text())
    tokens = np.memmap(data_dir / "train.bin", dtype=np.dtype(meta["dtype"]), mode="r")
    if len(tokens) <= seq_length:
        raise ValueError(f"the corpus ({len(tokens)} tokens) is shorter than one calibration window")
    tok = Tokenizer.from_file(str(data_dir / "tokenizer" / "tokenizer.json"))
    rng = random.Random(f"calibration:{seed}")
    starts = [rng.randrange(0, len(tokens) - seq_length) for _ in range(samples)]
    return [tok.decode([int(t) for t in tokens[s:s + seq_length]]) for s in starts]


def _recipe(int4: dict[str, Any], ignore: list[str] | None = None,
            hf_config: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    """The llm-compressor recipe of ``int4``; ``ignore`` (default ``int4["ignore"]``): the modules
    left unquantized (:func:`.families.int4_ignore` adds the family's own); ``hf_config``: the
    model's, for the AWQ mappings of its family (:func:`_awq_mappings`)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(num_bits=4, type="int", symmetric=int4["symmetric"], strategy="group",
                                 group_size=int4["group_size"]),
    )
    groups = {"group_0": scheme}
    method = int4["method"]
    ignore = list(int4["ignore"]) if ignore is None else ignore
    if method == "rtn":
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return QuantizationModifier(config_groups=groups, ignore=ignore)
    if method == "gptq":
        from llmcompressor.modifiers.quantization import GPTQModifier

        return GPTQModifier(config_groups=groups, ignore=ignore, dampening_frac=int4["dampening_frac"])
    if method == "awq":
        # AWQ scales salient channels from activation statistics, then the scheme is applied.
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        _skip_pinning_without_accelerator()
        return [AWQModifier(mappings=_awq_mappings(hf_config or {})),
                QuantizationModifier(config_groups=groups, ignore=ignore)]
    raise ValueError(f"unknown int4 method {method!r}")


def _awq_mappings(hf_config: dict[str, Any]):  # type: ignore[no-untyped-def]
    """AWQ's smoothing mappings where llm-compressor's choice by architecture does not fit, else
    None (its own). An MLA model with dense layers (the pipeline's export is all dense): its
    ``DeepseekV3ForCausalLM`` mappings balance the router (``mlp.gate``) with each layer's MLP and
    fail on a layer without one ("no matches found for keys: {'re:.*mlp.gate$'}"); llm-compressor's
    mappings for the mixed dense/MoE MLA family (Glm4MoeLite: the same layer names, router left
    out) fit every layer."""
    if not is_mla(hf_config) or len(moe_layers(hf_config)) == int(hf_config["num_hidden_layers"]):
        return None
    from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY

    return AWQ_MAPPING_REGISTRY["Glm4MoeLiteForCausalLM"]


def _skip_pinning_without_accelerator() -> None:
    """llm-compressor 0.14's AWQ pins its cached activations (``pin_memory``) before each grid
    search, which torch refuses on a host with no accelerator ("Cannot access accelerator device
    when none is available"). Pinning only speeds host-to-device copies: with no device, skip it."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if not torch.accelerator.is_available():
        IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None  # type: ignore[method-assign]


def quantize_cell(settings: dict[str, Any], src: str, data_dir: Path | None, out_dir: Path, mon: Monitor
                  ) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(settings["seed"])
    torch.set_num_threads(settings["threads"])
    precision = settings["precision"]
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(src)
    load_dtype = DTYPES.get(precision, "bfloat16")  # int4 quantizes the bf16 model; scales stay bf16
    hf_config = AutoConfig.from_pretrained(src).to_dict()
    if precision == "int4":
        why = int4_refusal(hf_config, settings["int4"], f"model {settings.get('model', src)!r}")
        if why:  # before llm-compressor fails deep inside an observer ("unflatten: ... don't multiply up")
            raise ValueError(why)
    if precision in w8a8.PRESETS:
        why = w8a8_refusal(hf_config, precision, settings[precision], f"model {settings.get('model', src)!r}")
        if why:
            raise ValueError(why)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, load_dtype))
    params_total = sum(p.numel() for p in model.parameters())
    mon.begin_window("quantize")
    method = _materialise(model, settings, hf_config, tokenizer, data_dir, out_dir)
    window = mon.end_window("quantize")
    tokenizer.save_pretrained(out_dir)
    disk = safetensors_bytes(out_dir)
    info = {"precision": precision, "weight_bits": settings["weight_bits"], "params_total": params_total,
            "disk_bytes": disk, "quant_method": method, "source": settings["source"],
            "torch_dtype": load_dtype, "architecture": (hf_config.get("architectures") or [None])[0],
            "family": family(hf_config), "precision_set": settings.get("precision_set", "paper")}
    (out_dir / SIDE_CAR).write_text(json.dumps(info, indent=2) + "\n")
    fig = window.figures()
    return {
        "precision": precision,
        **{k: fig[k] for k in WINDOW_FIGURES},
        "weight_bits": settings["weight_bits"],
        "quant_method": method,
        "params_total": params_total,
        "disk_bytes": disk,
        "seconds": window.seconds,
        "precision_set": info["precision_set"],
    }


# MoE checkpoints whose experts are stored per expert under names other than llm-compressor's
# linearized ``gate_proj``/``up_proj``/``down_proj`` (by transformers' conversion pattern):
# {pattern: (gate, up, down) names in the checkpoint}. vLLM reads these names back.
CHECKPOINT_EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2")}
FUSED_EXPERTS = (".experts.gate_up_proj", ".experts.down_proj")  # transformers' 3D expert tensors


def keep_expert_names(model, model_type: str) -> None:  # type: ignore[no-untyped-def]
    """Make ``save_pretrained`` write a linearized MoE model's experts under its checkpoint's
    names. llm-compressor linearizes fused 3D experts into one linear layer per expert
    (``experts.N.gate_proj``...) to quantize them, and transformers, saving, reverts only the
    conversions it applied at load (fused → per-expert ``w1``/``w3``/``w2`` for Mixtral): the
    linearized names would be saved as they are, and neither vLLM nor transformers reads them
    back (transformers leaves such experts randomly initialised). The save mapping becomes the
    model type's own, less its fused-expert converters, plus a renaming per expert projection
    (what llm-compressor's ``load_quantizable_moe`` registers; that path is not taken because its
    class patching lists every transformers module and imports torchvision, absent here)."""
    from transformers.conversion_mapping import _MODEL_TO_CONVERSION_PATTERN, get_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    names = CHECKPOINT_EXPERT_NAMES.get(_MODEL_TO_CONVERSION_PATTERN.get(model_type, model_type))
    if names is None:
        return
    base = [c for c in get_checkpoint_conversion_mapping(model_type) or []
            if not any(t in FUSED_EXPERTS for t in c.target_patterns)]
    model._weight_conversions = base + [
        WeightRenaming(source_patterns=rf"\.experts\.(\d+)\.{ckpt}\.", target_patterns=rf".experts.\1.{ours}.")
        for ckpt, ours in zip(names, ("gate_proj", "up_proj", "down_proj"))]


def _calibration(block: dict[str, Any], what: str, tokenizer, data_dir: Path | None, seed: int
                 ) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """``oneshot``'s calibration arguments: ``block["calibration"]`` windows of the corpus."""
    from datasets import Dataset

    cal = block["calibration"]
    if data_dir is None:
        raise ValueError(f"{what} needs calibration data (--data-dir)")
    texts = calibration_texts(data_dir, cal["samples"], cal["seq_length"], seed)
    enc = tokenizer(texts, truncation=True, max_length=cal["seq_length"])
    return dict(dataset=Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}),
                max_seq_length=cal["seq_length"], num_calibration_samples=cal["samples"])


def _materialise(model, settings: dict[str, Any], hf_config: dict[str, Any], tokenizer, data_dir: Path | None,
                 out_dir: Path) -> str:  # type: ignore[no-untyped-def]
    """Quantize or cast ``model`` and save it to ``out_dir``; returns the method."""
    precision = settings["precision"]
    if precision not in ("int4", *w8a8.PRESETS):
        model.save_pretrained(out_dir)
        return "cast"
    from llmcompressor import oneshot

    block = settings[precision]
    ignore = int4_ignore(hf_config, block.get("ignore") or [])
    if precision == "int4":
        method, recipe = block["method"], _recipe(block, ignore, hf_config)
        calibrated = method in ("gptq", "awq")
    else:
        method, recipe = w8a8.quant_method(precision, block), w8a8.recipe(precision, block, ignore)
        calibrated = w8a8.calibrates(precision, block)
    kwargs = (_calibration(block, f"{precision} method {method}", tokenizer, data_dir, settings["seed"])
              if calibrated else {})
    oneshot(model=model, recipe=recipe, **kwargs)
    keep_expert_names(model, hf_config["model_type"])
    model.save_pretrained(out_dir, save_compressed=True)
    return method
