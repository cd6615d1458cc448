"""The precisions beyond the paper, for real (quantization environment; serving in the inference
environment): W8A8 with per-channel weights and dynamic per-token activations, made by
llm-compressor on a tiny Llama and a tiny Mixtral (the xs export shapes).

- ``fp8``: FP8 e4m3 weights + scales per output channel (``float-quantized``), no calibration.
- ``int8``: int8 weights, SmoothQuant + GPTQ on the corpus (``int-quantized``); SmoothQuant's
  smoothing is folded into the weights, so they are compared through the model's outputs.
- Both: 1 byte a linear weight plus one bf16 scale per output channel on disk; transformers loads
  them (weights decompressed, activations quantized per token on the fly) close to bf16.
- Served through the inference stage's own entry point: vLLM on this CPU serves a dense W8A8
  checkpoint; MoE experts it cannot serve fall back to transformers, and the record says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from quantize_by_script import ROOT
from record_consistency import linear_shapes, model_params, safetensors_payload_bytes
from test_quantize import LLAMA, _logits, corpus, tiny  # noqa: F401 - fixtures
from test_quantize_mla_moe import moe  # noqa: F401 - fixture

from effbench.measure.monitor import Monitor
from effbench.quantize.run import quantize_cell

INFERENCE_PY = ROOT / ".venvs" / "inference" / "bin" / "python"
FP8 = {"ignore": ["lm_head"]}
INT8 = {"method": "smoothquant_gptq", "smoothing_strength": 0.8, "ignore": ["lm_head"], "dampening_frac": 0.01,
        "calibration": {"samples": 8, "seq_length": 64}}


def _settings(precision: str, **block) -> dict:
    s = {"model": "tiny", "precision": precision, "weight_bits": 8 if precision in ("fp8", "int8") else 16,
         "threads": 1, "device": "cpu", "seed": 0, "measure": {"interval_s": 0.1},
         "source": {"kind": "path", "ref": "x"},
         "precision_set": "beyond_paper" if precision in ("fp8", "int8") else "paper"}
    if precision in ("fp8", "int8"):
        s[precision] = {**(FP8 if precision == "fp8" else INT8), **block}
    return s


def _quantize(src: Path, out: Path, settings: dict, data: Path | None = None) -> dict:
    with Monitor(device="cpu", interval_s=0.1) as mon:
        return quantize_cell(settings, str(src), data, out, mon)


@pytest.fixture(scope="module")
def bf16(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bf16")
    _quantize(tiny, out, _settings("bf16"))
    return out


def w8a8_payload_bytes(config: dict) -> int:
    """Tensor bytes of a W8A8 checkpoint: 1 byte a linear weight and one bf16 scale per output
    channel; the rest (embedding, norms) bf16."""
    shapes = [s for _ in range(config["num_hidden_layers"]) for s in linear_shapes(config).values()]
    return sum(i * o + 2 * o for i, o in shapes) + 2 * (model_params(config) - sum(i * o for i, o in shapes))


@pytest.mark.parametrize("precision, method, kind, dtype", [
    ("fp8", "fp8_dynamic", "float", torch.float8_e4m3fn),
    ("int8", "smoothquant_gptq", "int", torch.int8),
    ("int8", "rtn", "int", torch.int8),
])
def test_w8a8_is_compressed_tensors_of_the_analytic_size(tiny, corpus, bf16, tmp_path, precision, method, kind, dtype):
    from safetensors.torch import load_file

    block = {"method": method} if precision == "int8" else {}
    v = _quantize(tiny, tmp_path, _settings(precision, **block), corpus)
    assert (v["quant_method"], v["weight_bits"], v["precision_set"]) == (method, 8, "beyond_paper")
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["format"] == f"{kind}-quantized" and qc["ignore"] == ["lm_head"]
    g = qc["config_groups"]["group_0"]
    w, a = g["weights"], g["input_activations"]
    assert (w["num_bits"], w["type"], w["strategy"], w["symmetric"], w["dynamic"]) == (8, kind, "channel", True, False)
    assert (a["num_bits"], a["type"], a["strategy"], a["symmetric"], a["dynamic"]) == (8, kind, "token", True, True)
    t = load_file(tmp_path / "model.safetensors")
    quantized = [k.removesuffix(".weight_scale") for k in t if k.endswith(".weight_scale")]
    assert len(quantized) == 7 * LLAMA["num_hidden_layers"]  # every linear but the (tied) lm_head
    for name in quantized:
        weight, scale = t[f"{name}.weight"], t[f"{name}.weight_scale"]
        assert weight.dtype == dtype and scale.dtype == torch.bfloat16 and scale.shape == (weight.shape[0], 1)
    assert safetensors_payload_bytes(tmp_path / "model.safetensors") == w8a8_payload_bytes(LLAMA)
    side = json.loads((tmp_path / "effbench.json").read_text())
    assert (side["precision"], side["quant_method"], side["precision_set"]) == (precision, method, "beyond_paper")
    assert side["disk_bytes"] == v["disk_bytes"] == (tmp_path / "model.safetensors").stat().st_size
    # transformers loads it (weights decompressed, activations quantized per token) close to bf16:
    # int8 keeps 8 significant bits, FP8 e4m3 3 mantissa bits (relative steps of 2^-4 on weights and
    # on activations alike). Measured on this random model: FP8 0.074, int8 0.023-0.025 (on the
    # pipeline's trained xs export: FP8 0.017, int8 0.007)
    ref = _logits(bf16)
    got = _logits(tmp_path)
    err = float((got - ref).norm() / ref.norm())
    print(f"{precision} {method}: logits off bf16 by {err:.4f}")
    assert err < (0.15 if precision == "fp8" else 0.05)
    assert float((got.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.75


def test_w8a8_refusal_comes_before_llm_compressor(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"quantize\.int8\.smoothing_strength 2 is not within \[0, 1\]"):
        _quantize(tiny, tmp_path, _settings("int8", smoothing_strength=2))
    assert not (tmp_path / "model.safetensors").exists()


def test_mixtral_experts_in_their_checkpoint_names_router_unquantized(moe, tmp_path):
    from safetensors.torch import load_file

    _quantize(moe, tmp_path, _settings("fp8"))
    t = load_file(tmp_path / "model.safetensors")
    assert t["model.layers.0.block_sparse_moe.experts.7.w2.weight"].dtype == torch.float8_e4m3fn
    assert t["model.layers.0.block_sparse_moe.gate.weight"].dtype == torch.bfloat16
    assert not any(".gate_proj." in k or ".experts.gate_up_proj" in k for k in t)


def _serve(model_dir: Path, out: Path, precision: str) -> dict:
    """The inference stage's record of ``model_dir`` at one offline point (inference environment)."""
    if not INFERENCE_PY.exists():
        pytest.skip("the inference environment is missing: run bash scripts/setup.sh")
    sys.path.insert(0, str(ROOT / "tests" / "inference"))
    from test_inference import _point_settings  # the serving tests' own load point and vLLM settings

    point = {**_point_settings("vllm", "offline", "offline", 4, 4), "precision": precision,
             "precision_set": "beyond_paper"}
    p = subprocess.run([str(INFERENCE_PY), str(ROOT / "scripts" / "inference.py"), "--settings",
                        json.dumps({"offline": point}), "--config-hash", "test", "--model-dir", str(model_dir),
                        "--out-dir", str(out)], capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(out)})
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-6000:])
    import pyarrow.parquet as pq

    (r,) = pq.read_table(out / "offline" / "record.parquet").to_pylist()
    assert (r["precision"], r["weight_bits"], r["precision_set"]) == (precision, 8, "beyond_paper")
    assert r["tokens"] == 2 * 4 * 8  # 2 repeats × 4 requests × 8 tokens
    return r


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_the_stage_serves_w8a8_with_vllm_or_says_why(tiny, corpus, tmp_path, precision):
    """vLLM 0.32 on this CPU (AVX-512, no AMX): FP8 by ChannelWiseTorchFP8ScaledMMLinearKernel, int8 by
    CPUInt8ScaledMMLinearKernel (oneDNN)."""
    _quantize(tiny, tmp_path / "q", _settings(precision), corpus)
    r = _serve(tmp_path / "q", tmp_path / "serve", precision)
    if r["engine"] == "transformers":  # a CPU whose vLLM build cannot run it: the record says why
        assert r["engine_fallback"] and "one engine per model" in r["engine_fallback"]
        pytest.skip(f"vLLM cannot serve {precision} on this CPU: {r['engine_fallback']}")
    assert r["engine"] == "vllm" and r["engine_fallback"] is None


def test_moe_experts_vllm_cannot_serve_fall_back_with_the_reason(moe, tmp_path):
    """vLLM 0.32's CPU fused-MoE FP8 kernels take only 128x128 block-scaled weights (on any CPU)."""
    _quantize(moe, tmp_path / "q", _settings("fp8"))
    r = _serve(tmp_path / "q", tmp_path / "serve", "fp8")
    assert r["engine"] == "transformers"
    assert "fp8 of this model: vLLM's CPU fused-MoE FP8 kernels" in r["engine_fallback"]
    assert "per-channel FP8 experts have no CPU backend" in r["engine_fallback"]
