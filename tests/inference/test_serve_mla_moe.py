"""Serving the two non-dense export families for real (inference environment): a tiny
``MixtralForCausalLM`` (MoE) and a tiny ``DeepseekV3ForCausalLM`` (MLA) of the embedded default's
xs shape, made by the quantize stage's own function in the quantization environment.

- MoE at bf16: vLLM's CPU build serves it (fused-MoE path) through the stage's entry point;
  its KV cache spec is the dense (GQA) layout, 2 · groups · head_dim · bytes a layer, and its
  weights hold every expert.
- MLA: vLLM's KV cache spec holds the latent and the RoPE key, (kv_lora_rank +
  qk_rope_head_dim) · bytes a layer, no per-head K and V; its MLA kernels take a latent of 576
  only (DeepSeek's 512 + 64), so the xs latent (64 + 32) fails at the first step, and the stage
  serves the model with transformers, the record saying why ([F]).
- MoE at int4: where the CPU has no int4 fused-MoE kernel (AMX), vLLM cannot load the experts,
  and the stage's decision says so before trying."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from quantize_by_script import QUANTIZE_PY
from record_consistency import check_record

from effbench.inference.kv_cache import (
    kv_budget_bytes,
    kv_bytes_per_token,
    kv_bytes_per_token_mla,
    kv_bytes_per_token_of,
)
from effbench.record import read_records

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
HIDDEN, VOCAB, LAYERS, HEADS = 256, 1024, 2, 4
KV_LORA, ROPE, MOE_GROUPS, HEAD_DIM = 64, 32, 2, 64
VLLM = {"max_model_len": 128, "max_num_seqs": 8, "enforce_eager": True, "gpu_memory_utilization": 0.9,
        "cpu_kvcache_gb": 1, "block_size": 128, "kv_cache_headroom": 1.0, "single_process": True}

_MAKE = """
import json, sys, torch
from pathlib import Path
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (DeepseekV3Config, DeepseekV3ForCausalLM, MixtralConfig, MixtralForCausalLM,
                          PreTrainedTokenizerFast)
from effbench.measure.monitor import Monitor
from effbench.quantize.run import quantize_cell

root = Path(sys.argv[1])
common = dict(vocab_size=1024, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
              tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
configs = {"mla": (DeepseekV3ForCausalLM, DeepseekV3Config(**common, intermediate_size=512, num_key_value_heads=4,
                   q_lora_rank=None, kv_lora_rank=64, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                   first_k_dense_replace=2)),
           "moe": (MixtralForCausalLM, MixtralConfig(**common, intermediate_size=256, num_key_value_heads=2,
                   head_dim=64, num_local_experts=8, num_experts_per_tok=2))}
tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(1024)}, unk_token="t0"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
for name, (cls, cfg) in configs.items():
    torch.manual_seed(0)
    cls(cfg).save_pretrained(root / "src" / name)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1",
                            eos_token="t2").save_pretrained(root / "src" / name)
for name, precision in (("mla", "bf16"), ("moe", "bf16"), ("moe", "int4")):
    s = {"model": name, "precision": precision, "weight_bits": 4 if precision == "int4" else 16, "threads": 1,
         "device": "cpu", "seed": 0, "measure": {"interval_s": 0.1}, "source": {"kind": "path", "ref": "x"},
         "int4": {"method": "rtn", "group_size": 128, "symmetric": True, "ignore": ["lm_head"], "dampening_frac": 0.01,
                  "calibration": {"samples": 1, "seq_length": 8}}}
    with Monitor(device="cpu", interval_s=0.1) as mon:
        quantize_cell(s, str(root / "src" / name), None, root / f"{name}-{precision}", mon)
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> dict[str, Path]:
    """{"mla-bf16", "moe-bf16", "moe-int4"}: the quantize stage's checkpoints (one quantization process)."""
    if not QUANTIZE_PY.exists():
        pytest.skip("the quantization environment is missing: run bash scripts/setup.sh")
    root = tmp_path_factory.mktemp("ck")
    p = subprocess.run([str(QUANTIZE_PY), "-c", _MAKE, str(root)], capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return {k: root / k for k in ("mla-bf16", "moe-bf16", "moe-int4")}


def _serve(model_dir: Path, precision: str, precisions: list[str], out: Path) -> dict:
    """One offline load point through the stage's entry point (scripts/inference.py), engine: vllm."""
    s = {"model": "tiny", "precision": precision, "load_point": "offline", "engine": "vllm", "dtype": "bf16",
         "point": {"mode": "offline", "requests": 4, "concurrency": 4, "prompt_len": 16, "output_len": 8},
         "warmup_requests": 1, "repeats": 2, "min_seconds": 0, "threads": 1, "device": "cpu", "seed": 0,
         "measure": {"interval_s": 0.1}, "vllm": VLLM}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "inference.py"), "--settings",
                        json.dumps({"offline": s}), "--config-hash", "test", "--model-dir", str(model_dir),
                        "--model-precisions", *precisions, "--out-dir", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=900)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-6000:])
    (r,) = read_records([out / "offline" / "record.parquet"]).to_pylist()
    check_record(r, out / "offline" / "samples.parquet")
    assert r["tokens"] == 2 * 4 * 8 and r["precision"] == precision
    return r


def test_moe_bf16_is_served_by_vllm_with_the_dense_kv_layout(ckpt, tmp_path):
    pytest.importorskip("vllm")
    r = _serve(ckpt["moe-bf16"], "bf16", ["bf16"], tmp_path / "moe")
    assert r["engine"] == "vllm" and r["engine_fallback"] is None
    # vLLM's own KV cache spec (summed over layers): the attention's GQA layout, experts change nothing
    per_token = kv_bytes_per_token(LAYERS, MOE_GROUPS, HEAD_DIM, 2)
    cfg = json.loads((ckpt["moe-bf16"] / "config.json").read_text())
    assert r["kv_bytes_per_token"] == per_token == kv_bytes_per_token_of(cfg, "bf16") == 1024
    budget = kv_budget_bytes(per_token, [(4, 24)], 128, 128)  # 4 requests × 1 block + the null block
    assert r["kv_cache_budget_bytes"] == budget and r["mem_kv_reserved_gb"] == pytest.approx(budget / 1e9, rel=1e-12)
    # the weights hold every expert (8 per layer, 3 projections of 256 × 256, bf16), not the 2 a token uses
    assert r["mem_weights_gb"] * 1e9 >= LAYERS * 8 * 3 * 256 * 256 * 2
    assert r["running_peak"] == 4


_PROBE = """
import json, sys
from effbench.inference.engine_choice import vllm_unavailable_reason
from effbench.inference.engines import VllmEngine
vllm, jobs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if __name__ == "__main__":
    for name, d, budget in jobs:
        why = vllm_unavailable_reason(d, "cpu")
        try:
            e = VllmEngine(d, "bf16", 0, vllm, "cpu", 1, budget)
        except Exception as exc:  # noqa: BLE001
            print("PROBE " + json.dumps({"name": name, "why": why, "load": repr(exc)[:500]}), flush=True)
            continue
        try:
            e.run([[5, 6, 7, 8]], 2, 1)
            step = "ok"
        except Exception as exc:  # noqa: BLE001
            step = repr(exc)[:500]
        print("PROBE " + json.dumps({"name": name, "why": why, "load": "ok", "step": step, "memory": e.memory}),
              flush=True)
        e.close()
"""


@pytest.fixture(scope="module")
def probe(ckpt) -> dict[str, dict]:
    """vLLM itself on the MLA model and the int4 MoE model, in one process: loads the engine (its KV
    cache spec), runs one step, and what the stage's decision said beforehand."""
    pytest.importorskip("vllm")
    mla_budget = kv_budget_bytes(kv_bytes_per_token_mla(LAYERS, KV_LORA, ROPE, 2), [(3, 40)], 128, 128)
    moe_budget = kv_budget_bytes(kv_bytes_per_token(LAYERS, MOE_GROUPS, HEAD_DIM, 2), [(3, 40)], 128, 128)
    jobs = [("mla", str(ckpt["mla-bf16"]), mla_budget), ("moe-int4", str(ckpt["moe-int4"]), moe_budget)]
    p = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(VLLM), json.dumps(jobs)], capture_output=True,
                       text=True, env=ENV, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    out = [json.loads(ln[len("PROBE "):]) for ln in p.stdout.splitlines() if ln.startswith("PROBE ")]
    return {o["name"]: {**o, "budget": b} for o, (_, _, b) in zip(out, jobs)}


def test_vllm_mla_kv_cache_spec_is_the_latent_and_the_rope_key(probe, ckpt):
    mla = probe["mla"]
    assert mla["load"] == "ok", mla
    per_layer = mla["memory"]["kv_bytes_per_token_per_layer"]
    assert len(per_layer) == LAYERS and set(per_layer.values()) == {(KV_LORA + ROPE) * 2}  # 192 B, not 2·4·96·2
    cfg = json.loads((ckpt["mla-bf16"] / "config.json").read_text())
    assert sum(per_layer.values()) == kv_bytes_per_token_of(cfg, "bf16") == kv_bytes_per_token_mla(LAYERS, KV_LORA,
                                                                                                     ROPE, 2)
    assert mla["memory"]["kv_allocated_bytes"] == mla["budget"]  # whole blocks (vLLM's MLA block: 16 tokens)


def test_vllm_cannot_run_the_mla_latent_and_the_stage_said_so(probe):
    mla = probe["mla"]
    if mla["why"] is None:  # a vLLM whose MLA kernels take this latent: it must then run
        assert mla["step"] == "ok"
        pytest.skip("this vLLM serves the xs MLA latent")
    assert "Head dimension 96 is not supported by MLA" in mla["step"], mla["step"]
    assert "64 + 32 = 96" in mla["why"]


def test_vllm_int4_moe_matches_the_stages_decision(probe):
    moe = probe["moe-int4"]
    if moe["why"] is None:  # an AMX CPU: vLLM loads and runs the int4 experts
        assert moe["load"] == "ok" and moe["step"] == "ok", moe
    else:
        assert "fused-MoE kernel" in moe["why"] and "No WNA16 MoE backend" in moe["load"], moe


def test_mla_is_served_by_transformers_with_the_reason(ckpt, tmp_path):
    r = _serve(ckpt["mla-bf16"], "bf16", ["bf16", "int4"], tmp_path / "mla")
    assert r["engine"] == "transformers"  # [F]
    why = r["engine_fallback"]
    assert "bf16, int4 of this model: vLLM's MLA attention" in why and "64 + 32 = 96" in why
    assert "one engine per model" in why
    # the architecture's KV bytes per token (the latent), not the per-head K and V transformers caches
    assert r["kv_bytes_per_token"] == kv_bytes_per_token_mla(LAYERS, KV_LORA, ROPE, 2) == 384
    assert r["mem_kv_reserved_gb"] is None and "grows a cache per batch" in r["mem_kv_reserved_gb__missing"]
