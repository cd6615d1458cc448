"""The quantize stage on the two non-dense export families (quantization environment): a tiny
``DeepseekV3ForCausalLM`` (MLA, every layer dense) and a tiny ``MixtralForCausalLM`` (8 experts,
top 2) of the embedded default's xs shape, cast to bf16 and quantized to int4 by GPTQ with
llm-compressor, as config/config.yaml's quantize.int4 does it.

- MLA: ``kv_b_proj`` reads the latent (kv_lora_rank 64), which group 128 does not divide: the
  stage refuses that before llm-compressor runs, and quantizes with group 64, or with group 128
  and ``kv_b_proj`` ignored (left bf16); AWQ too (its DeepSeek mappings expect a router in
  every layer; the export's layers are all dense).
- MoE: every expert is quantized and saved under Mixtral's own per-expert names (w1/w2/w3); the
  routers stay bf16.
- transformers loads every int4 checkpoint back with exactly the weights the checkpoint stores
  (packed 4-bit values × group scales), experts included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from effbench.measure.monitor import Monitor
from effbench.quantize.run import quantize_cell

HIDDEN, VOCAB, LAYERS, HEADS = 256, 1024, 2, 4


def _tokenizer(d: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2").save_pretrained(d)


def _common() -> dict:
    return dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="module")
def mla(tmp_path_factory) -> Path:
    """The MLA export's shape (config.yaml pretrain.techniques.mla at size xs)."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    d = tmp_path_factory.mktemp("mla")
    torch.manual_seed(0)
    cfg = DeepseekV3Config(**_common(), intermediate_size=512, num_key_value_heads=HEADS, q_lora_rank=None,
                           kv_lora_rank=64, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                           first_k_dense_replace=LAYERS)
    DeepseekV3ForCausalLM(cfg).save_pretrained(d)
    _tokenizer(d)
    return d


@pytest.fixture(scope="module")
def moe(tmp_path_factory) -> Path:
    """The MoE export's shape (config.yaml pretrain.techniques.moe at size xs: GQA, 8 experts of FFN 256, top 2)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    d = tmp_path_factory.mktemp("moe")
    torch.manual_seed(0)
    cfg = MixtralConfig(**_common(), intermediate_size=256, num_key_value_heads=2, head_dim=64, num_local_experts=8,
                        num_experts_per_tok=2)
    MixtralForCausalLM(cfg).save_pretrained(d)
    _tokenizer(d)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path_factory.mktemp("corpus")
    np.random.default_rng(0).integers(0, VOCAB, 20_000, dtype=np.uint16).tofile(d / "train.bin")
    (d / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": VOCAB}))
    (d / "tokenizer").mkdir()
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer" / "tokenizer.json"))
    return d


def _settings(precision: str, group: int = 128, ignore: tuple[str, ...] = ("lm_head",), method: str = "gptq") -> dict:
    s = {"model": "xs-tiny", "precision": precision, "weight_bits": 4 if precision == "int4" else 16, "threads": 1,
         "device": "cpu", "seed": 0, "measure": {"interval_s": 0.1}, "source": {"kind": "path", "ref": "x"}}
    if precision == "int4":  # the default config's method
        s["int4"] = {"method": method, "group_size": group, "symmetric": True, "ignore": list(ignore),
                     "dampening_frac": 0.01, "calibration": {"samples": 8, "seq_length": 64}}
    return s


def _quantize(src: Path, out: Path, settings: dict, corpus: Path | None = None) -> dict:
    with Monitor(device="cpu", interval_s=0.1) as mon:
        return quantize_cell(settings, str(src), corpus, out, mon)


def _stored(q_dir: Path, group: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(each quantized linear's weight as stored: 4-bit values × its group's scale, the unquantized tensors)."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    t = load_file(q_dir / "model.safetensors")
    deq = {}
    for name in (k.removesuffix(".weight_packed") for k in t if k.endswith(".weight_packed")):
        shape = torch.Size(t[f"{name}.weight_shape"].tolist())
        q = unpack_from_int32(t[f"{name}.weight_packed"], 4, shape).float()
        assert q.min() >= -8 and q.max() <= 7, name
        deq[name] = q * t[f"{name}.weight_scale"].float().repeat_interleave(group, dim=1)
    plain = {k.removesuffix(".weight"): v for k, v in t.items() if k.endswith(".weight")}
    return deq, plain


def _close_to(bf16_dir: Path, deq: dict[str, torch.Tensor], name_map=lambda n: n) -> None:
    """GPTQ moves weights off the nearest grid point, not far: each layer within 20 % of its bf16 weights."""
    from safetensors.torch import load_file

    ref = load_file(bf16_dir / "model.safetensors")
    for name, w in deq.items():
        r = ref[f"{name_map(name)}.weight"].float()
        assert float((w - r).norm() / r.norm()) < 0.2, name


def _loaded(q_dir: Path):  # type: ignore[no-untyped-def]
    """The int4 checkpoint as transformers loads it, decompressed (as the inference environment's
    transformers does by default; this environment's keeps it compressed, with no forward)."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    decompressed = CompressedTensorsConfig(run_compressed=False)
    return AutoModelForCausalLM.from_pretrained(q_dir, dtype=torch.float32, quantization_config=decompressed).eval()


def test_mla_int4_group_128_is_refused_before_llm_compressor(mla, tmp_path):
    with pytest.raises(ValueError, match=re.escape("kv_lora_rank 64 (kv_b_proj)")) as e:
        _quantize(mla, tmp_path / "q", _settings("int4", 128))
    assert "group_size 128" in str(e.value) and "'re:.*kv_b_proj$'" in str(e.value) and "(32, 64)" in str(e.value)
    assert not (tmp_path / "q" / "model.safetensors").exists()


@pytest.mark.parametrize("group,ignore,method", [(64, ("lm_head",), "gptq"),
                                                 (128, ("lm_head", "re:.*kv_b_proj$"), "gptq"),
                                                 (64, ("lm_head",), "awq")])
def test_mla_int4(mla, corpus, tmp_path, group, ignore, method):
    b = _quantize(mla, tmp_path / "bf16", _settings("bf16"))
    q = _quantize(mla, tmp_path / "int4", _settings("int4", group, ignore, method), corpus)
    assert q["quant_method"] == method and q["params_total"] == b["params_total"]
    assert q["disk_bytes"] < b["disk_bytes"]
    side = json.loads((tmp_path / "int4" / "effbench.json").read_text())
    assert side["architecture"] == "DeepseekV3ForCausalLM" and side["family"] == "mla"
    qc = json.loads((tmp_path / "int4" / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "pack-quantized" and qc["config_groups"]["group_0"]["weights"]["group_size"] == group
    deq, plain = _stored(tmp_path / "int4", group)
    kinds = {n.split(".", 3)[-1] for n in deq}
    expected = {"self_attn.q_proj", "self_attn.kv_a_proj_with_mqa", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj"}
    if group == 64:  # every linear layer, the latent's up-projection too
        assert kinds == expected | {"self_attn.kv_b_proj"} and len(deq) == LAYERS * 7
    else:  # kv_b_proj ignored: kept bf16
        assert kinds == expected and len(deq) == LAYERS * 6
        assert plain["model.layers.0.self_attn.kv_b_proj"].dtype == torch.bfloat16
    if method == "gptq":  # AWQ stores channel-scaled weights (the scale moves into the preceding norm)
        _close_to(tmp_path / "bf16", deq)
    m = _loaded(tmp_path / "int4")  # transformers computes with exactly what is stored (compressed or not)
    with torch.no_grad():
        for name, w in deq.items():
            seen = m.get_submodule(name)(torch.eye(w.shape[1])).T  # a linear layer applied to the identity: W
            assert torch.allclose(seen, w, atol=1e-2, rtol=1e-2), name


def test_moe_int4_quantizes_every_expert_and_keeps_the_router(moe, corpus, tmp_path):
    b = _quantize(moe, tmp_path / "bf16", _settings("bf16"))
    q = _quantize(moe, tmp_path / "int4", _settings("int4", 128), corpus)
    assert q["params_total"] == b["params_total"] and q["disk_bytes"] < b["disk_bytes"]
    assert json.loads((tmp_path / "int4" / "effbench.json").read_text())["family"] == "moe"
    qc = json.loads((tmp_path / "int4" / "config.json").read_text())["quantization_config"]
    assert {f"model.layers.{i}.block_sparse_moe.gate" for i in range(LAYERS)} <= set(qc["ignore"])
    deq, plain = _stored(tmp_path / "int4", 128)
    experts = {n for n in deq if ".experts." in n}
    # Mixtral's own names (vLLM's loader and transformers read them), 8 experts × 3 × 2 layers
    assert experts == {f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}"
                       for i in range(LAYERS) for e in range(8) for w in ("w1", "w2", "w3")}
    assert len(deq) == len(experts) + LAYERS * 4  # and q/k/v/o
    for i in range(LAYERS):  # the router as it was (bf16 of the source)
        assert plain[f"model.layers.{i}.block_sparse_moe.gate"].dtype == torch.bfloat16
    _close_to(tmp_path / "bf16", deq)
    m = _loaded(tmp_path / "int4")  # fused experts: gate_up_proj [E, 2·FFN, H] = [w1; w3], down_proj [E, H, FFN]
    for i in range(LAYERS):
        ex = m.model.layers[i].mlp.experts
        for e in range(8):
            p = f"model.layers.{i}.block_sparse_moe.experts.{e}"
            stored = torch.cat([deq[f"{p}.w1"], deq[f"{p}.w3"]])
            assert torch.allclose(ex.gate_up_proj[e].float(), stored, atol=1e-2, rtol=1e-2), p
            assert torch.allclose(ex.down_proj[e].float(), deq[f"{p}.w2"], atol=1e-2, rtol=1e-2), p


def test_bf16_casts_keep_every_tensor(mla, moe, tmp_path):
    from safetensors.torch import load_file

    for name, src, arch in (("mla", mla, "DeepseekV3ForCausalLM"), ("moe", moe, "MixtralForCausalLM")):
        _quantize(src, tmp_path / name, _settings("bf16"))
        side = json.loads((tmp_path / name / "effbench.json").read_text())  # what the later stages read
        assert (side["architecture"], side["family"], side["quant_method"]) == (arch, name, "cast")
        got, ref = load_file(tmp_path / name / "model.safetensors"), load_file(src / "model.safetensors")
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k].bfloat16()) for k in ref), name
