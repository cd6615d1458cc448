"""Real int4 quantization of a tiny Llama with llm-compressor (quantization environment):
compressed-tensors on disk, smaller than bf16, and loadable by transformers with outputs
close to the bf16 model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from record_consistency import check_int4_size, int4_payload_bytes, model_params, safetensors_payload_bytes

from effbench.measure.monitor import Monitor
from effbench.quantize.run import quantize_cell

HIDDEN, FFN, VOCAB = 256, 512, 1024
GROUP = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A pipeline-style corpus (train.bin + meta.json + tokenizer/) for GPTQ calibration."""
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rng.integers(0, VOCAB, 20_000, dtype=np.uint16).tofile(d / "train.bin")
    (d / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": VOCAB}))
    (d / "tokenizer").mkdir()
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer" / "tokenizer.json"))
    return d


def _settings(precision: str, method: str = "rtn") -> dict:
    s = {"model": "tiny", "precision": precision, "weight_bits": 16 if precision != "int4" else 4, "threads": 1,
         "device": "cpu", "seed": 0, "measure": {"interval_s": 0.1}, "source": {"kind": "path", "ref": "x"}}
    if precision == "int4":
        s["int4"] = {"method": method, "group_size": GROUP, "symmetric": True, "ignore": ["lm_head"],
                     "dampening_frac": 0.01, "calibration": {"samples": 8, "seq_length": 64}}
    return s


def _logits(model_dir: Path, dtype=torch.bfloat16) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    ids = torch.arange(10, 42).unsqueeze(0)
    with torch.no_grad():
        return m(input_ids=ids).logits.float()




@pytest.fixture(scope="module")
def rtn_error(tiny, tmp_path_factory) -> float:
    """Relative distance of round-to-nearest int4 logits from bf16's: what GPTQ and AWQ must not exceed."""
    out = tmp_path_factory.mktemp("rtn")
    for precision in ("bf16", "int4"):
        with Monitor(device="cpu", interval_s=0.1) as mon:
            quantize_cell(_settings(precision, "rtn"), str(tiny), None, out / precision, mon)
    ref = _logits(out / "bf16")
    return float((_logits(out / "int4") - ref).norm() / ref.norm())


LLAMA = {"hidden_size": HIDDEN, "intermediate_size": FFN, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "vocab_size": VOCAB, "tie_word_embeddings": True}


def dequantized(q_dir: Path) -> dict[str, torch.Tensor]:
    """Each quantized linear's weights as the checkpoint stores them: unpacked 4-bit values × their group's scale."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    t = load_file(q_dir / "model.safetensors")
    out = {}
    for name in (k.removesuffix(".weight_packed") for k in t if k.endswith(".weight_packed")):
        shape = torch.Size(t[f"{name}.weight_shape"].tolist())
        q = unpack_from_int32(t[f"{name}.weight_packed"], 4, shape).float()
        assert q.min() >= -8 and q.max() <= 7, name  # signed 4-bit values
        out[name] = q * t[f"{name}.weight_scale"].float().repeat_interleave(GROUP, dim=1)
    return out


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])  # awq: the paper's toolkit
def test_int4_is_compressed_tensors_of_the_analytic_size(tiny, corpus, tmp_path, method, rtn_error):
    outs = {}
    for precision in ("bf16", "int4"):
        out = tmp_path / precision
        with Monitor(device="cpu", interval_s=0.1) as mon:
            values = quantize_cell(_settings(precision, method), str(tiny), corpus, out, mon)
        outs[precision] = (out, values)
    (b_dir, b), (q_dir, q) = outs["bf16"], outs["int4"]
    qc = json.loads((q_dir / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    w = qc["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["group_size"], w["strategy"], w["symmetric"]) == (4, GROUP, "group", True)
    assert q["quant_method"] == method and q["weight_bits"] == 4
    assert q["params_total"] == b["params_total"] == model_params(LLAMA)
    # Sizes from the parameter counts: bf16 is 2 bytes a parameter; int4 as int4_payload_bytes says
    # (the rest of each file is its JSON header).
    assert safetensors_payload_bytes(b_dir / "model.safetensors") == 2 * model_params(LLAMA)
    check_int4_size(q_dir / "model.safetensors", LLAMA, GROUP)
    assert q["disk_bytes"] == (q_dir / "model.safetensors").stat().st_size
    assert b["disk_bytes"] == (b_dir / "model.safetensors").stat().st_size
    side = json.loads((q_dir / "effbench.json").read_text())
    assert side["disk_bytes"] == q["disk_bytes"] and side["precision"] == "int4"
    deq = dequantized(q_dir)
    assert len(deq) == int4_payload_bytes(LLAMA, GROUP)[1]  # every linear but lm_head (tied, ignored) is quantized
    if method == "rtn":
        # Round to nearest: each weight within half a step of its group's scale (bf16 rounding aside).
        from safetensors.torch import load_file

        ref = load_file(b_dir / "model.safetensors")
        for name, d in deq.items():
            groups = ref[f"{name}.weight"].float().reshape(d.shape[0], -1, GROUP)
            half_step = groups.abs().amax(-1, keepdim=True) / 15  # symmetric int4: absmax is 7.5 steps
            err = (d.reshape_as(groups) - groups).abs()
            assert (err <= half_step * 1.01 + groups.abs() * 2**-8).all(), name
    else:
        # GPTQ and AWQ move weights off the nearest grid point to lower the calibration error: on the
        # model's outputs they should not do worse than round to nearest.
        ref = _logits(b_dir)
        err = float((_logits(q_dir) - ref).norm() / ref.norm())
        assert err <= rtn_error, f"{method}: int4 logits off bf16 by {err:.3f}, round to nearest by {rtn_error:.3f}"


def test_casts_keep_the_weights(tiny, tmp_path):
    import time

    from safetensors.torch import load_file

    t0 = time.monotonic()
    with Monitor(device="cpu", interval_s=0.1) as mon:
        v = quantize_cell(_settings("fp16"), str(tiny), None, tmp_path / "fp16", mon)
    assert 0 < v["seconds"] <= time.monotonic() - t0  # the measured window inside the call
    cfg = json.loads((tmp_path / "fp16" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "float16" and "quantization_config" not in cfg
    got, src = load_file(tmp_path / "fp16" / "model.safetensors"), load_file(tiny / "model.safetensors")
    assert got.keys() == src.keys() and all(torch.equal(got[k], src[k].half()) for k in src)
    assert safetensors_payload_bytes(tmp_path / "fp16" / "model.safetensors") == 2 * model_params(LLAMA)
