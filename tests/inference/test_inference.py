"""The inference stage for real (inference environment): an int4 checkpoint made by the
pipeline's quantize script, served by vLLM (the CPU build here) at two load points with one
engine load, through the stage's own entry point; the transformers fallback; and
lm-evaluation-harness on the pipeline's offline tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from quantize_by_script import QUANTIZE_PY, quantize_by_script
from record_consistency import check_record, safetensors_payload_bytes

from effbench.inference.kv_cache import kv_budget_bytes, kv_bytes_per_token, kv_bytes_per_token_of
from effbench.record import read_records

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
HIDDEN, FFN, VOCAB, LAYERS, HEADS = 256, 512, 1024, 2, 4
ATTENTION_GROUPS = {"mha": HEADS, "gqa": 2, "mqa": 1}


def _tiny_checkpoint(d: Path, kv_heads: int) -> Path:
    """A decoder shaped as the pipeline's export writes it (Llama, head_dim 64, tied embeddings)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=kv_heads, head_dim=HIDDEN // HEADS,
                      max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("tiny"), kv_heads=2)


@pytest.fixture(scope="module")
def int4_dir(tiny, tmp_path_factory) -> Path:
    if not QUANTIZE_PY.exists():
        pytest.skip("the quantization environment is missing: run bash scripts/setup.sh")
    return quantize_by_script(tiny, tmp_path_factory.mktemp("q"), "int4")


def _point_settings(engine: str, point: str, mode: str, requests: int, concurrency: int) -> dict:
    return {"model": "tiny", "precision": "int4", "load_point": point, "engine": engine, "dtype": "bf16",
            "point": {"mode": mode, "requests": requests, "concurrency": concurrency, "prompt_len": 16,
                      "output_len": 8},
            "warmup_requests": 1, "repeats": 2, "min_seconds": 0, "threads": 1, "device": "cpu", "seed": 0,
            "measure": {"interval_s": 0.1},
            "vllm": VLLM}


# single_process as the embedded default (the engine core in the test's process: ~40 s less per
# engine start); the out-of-memory test runs vLLM's own multi-process layout as well.
VLLM = {"max_model_len": 128, "max_num_seqs": 8, "enforce_eager": True, "gpu_memory_utilization": 0.9,
        "cpu_kvcache_gb": 1, "block_size": 128, "kv_cache_headroom": 1.0, "single_process": True}


def _serve(engine: str, model_dir: Path, out: Path) -> list[dict]:
    points = {"offline": _point_settings(engine, "offline", "offline", 6, 6),
              "c2": _point_settings(engine, "c2", "concurrency", 4, 2)}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "inference.py"), "--settings", json.dumps(points),
                        "--config-hash", "test", "--model-dir", str(model_dir), "--out-dir", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=900)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-6000:])
    assert p.stderr.count("loaded in") == 1  # one engine load serves both points
    return read_records([out / "offline" / "record.parquet", out / "c2" / "record.parquet"]).to_pylist()


def _check(records: list[dict], engine: str, model_dir: Path, out: Path) -> None:
    off, c2 = records
    for r, n, point in ((off, 6, "offline"), (c2, 4, "c2")):
        # AL = TTFT + (n−1)·TPOT, mean ITL = mean TPOT, IT within what the window and concurrency allow,
        # J/token, the window inside the job (tests/record_consistency.py)
        check_record(r, out / point / "samples.parquet")
        assert r["engine"] == engine and r["precision"] == "int4"
        assert r["tokens"] == 2 * n * 8 and r["samples"] == 2 * n and r["repeats"] == 2  # fixed output length
        assert r["weight_bits"] == 4 and r["quant_method"] == "rtn"
        assert r["disk_bytes"] == (model_dir / "model.safetensors").stat().st_size
        assert r["ttft_s_mean"] <= r["e2e_s_mean"]  # the first token comes before the last
        if 2 * n >= 10:  # a p50 needs 10 requests pooled over the repeats (docs/noise.md)
            assert r["ttft_s_p50"] <= r["e2e_s_p50"]
        else:
            assert r["e2e_s_p50"] is None and r["e2e_s_p50__missing"].startswith("p50 needs 10 requests")
        assert r["ttft_s_p90"] is None and r["ttft_s_p90__missing"].startswith("p90 needs 50 requests")
        assert r["mem_weights_gb"] <= r["amu_gb"] <= r["peak_mem_gb"]  # the process holds its weights
        assert r["amu_gb__source"].startswith(("psutil", "nvml"))
    assert off["concurrency"] == 6 and c2["concurrency"] == 2
    assert off["batch_size"] == 6 and c2["batch_size"] == 2  # the batch the load allows, not max_num_seqs (8)


def test_vllm_serves_the_pipelines_int4_checkpoint(int4_dir, tmp_path):
    pytest.importorskip("vllm")
    from effbench.inference.engine_choice import vllm_unavailable_reason

    why = vllm_unavailable_reason(int4_dir, "cpu")
    records = _serve("vllm", int4_dir, tmp_path / "vllm")
    if why:  # this CPU's vLLM build has no int4 kernel: the stage serves with transformers and says so
        _check(records, "transformers", int4_dir, tmp_path / "vllm")
        assert all(why in r["engine_fallback"] and "one engine per model" in r["engine_fallback"] for r in records)
        pytest.skip(f"the vLLM int4 checks need a CPU whose vLLM build has the kernel: {why}")
    _check(records, "vllm", int4_dir, tmp_path / "vllm")
    assert all(r["engine_fallback"] is None for r in records)
    # The engine process is a child of the measured process: its memory is in AMU.
    assert records[0]["amu_gb"] > 0.2
    per_token = kv_bytes_per_token(LAYERS, 2, HIDDEN // HEADS, 2)
    # Budget for the largest point: 6 requests × 1 block of 128 tokens (16 + 8 fit one), plus the
    # null block (one 128-token request is 1 block): 7 blocks, reserved exactly.
    budget = 7 * 128 * per_token
    for r, running in zip(records, (6, 2)):
        assert r["kv_bytes_per_token"] == per_token and r["kv_cache_budget_bytes"] == budget
        assert r["mem_kv_reserved_gb"] == pytest.approx(budget / 1e9, rel=1e-12)
        assert r["running_peak"] == running  # vLLM's scheduler ran exactly the load's concurrency
        # every running request held one block at the peak (vLLM's own block accounting)
        assert r["mem_kv_peak_used_gb"] == pytest.approx(running * 128 * per_token / 1e9, rel=1e-12)
        # int4 weights: packed 4-bit linears + bf16 embedding, under the bf16 size of the same parameters
        assert 0 < r["mem_weights_gb"] * 1e9 < 2 * r["params_total"]
        assert r["mem_runtime_gb"] == pytest.approx(r["amu_gb"] - r["mem_weights_gb"] - r["mem_kv_reserved_gb"])
        assert r["mem_weights_gb__source"].startswith("vllm_worker_parameter_bytes")


_OPEN_VLLM = """
import json, sys
from effbench.inference.engines import VllmEngine
for name, d, budget in json.loads(sys.argv[2]):  # one process, one vLLM import, one engine at a time
    e = VllmEngine(d, "bf16", 0, json.loads(sys.argv[1]), "cpu", 1, budget)
    print("MEMORY " + name + " " + json.dumps(e.memory), flush=True)
    e.close()
"""


def _kv_budget(groups: int) -> int:
    return kv_budget_bytes(kv_bytes_per_token(LAYERS, groups, HIDDEN // HEADS, 2), [(3, 40)], VLLM["block_size"],
                           VLLM["max_model_len"])


@pytest.fixture(scope="module")
def vllm_memory(tmp_path_factory) -> dict[str, dict]:
    """What vLLM's worker reports for one tiny checkpoint per attention variant, each loaded in turn
    by one process (one vLLM import for the three: ~10 s each on 2 cores)."""
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("kv")
    jobs = [(a, str(_tiny_checkpoint(root / a, g)), _kv_budget(g)) for a, g in ATTENTION_GROUPS.items()]
    p = subprocess.run([sys.executable, "-c", _OPEN_VLLM, json.dumps(VLLM), json.dumps(jobs)],
                       capture_output=True, text=True, env=ENV, timeout=900)  # a load: 20-140 s on 2 busy cores
    assert p.returncode == 0, p.stderr[-4000:]
    lines = [ln.split(" ", 2) for ln in p.stdout.splitlines() if ln.startswith("MEMORY ")]
    return {name: {**json.loads(mem), "dir": d} for (_, name, mem), (_, d, _) in zip(lines, jobs)}


@pytest.mark.parametrize("attention", ["mha", "gqa", "mqa"])
def test_vllm_kv_bytes_per_token_equal_the_analytic_size(attention, vllm_memory):
    """vLLM's KV cache spec (per layer, from the engine after load) against 2·L·groups·head_dim·bytes."""
    groups = ATTENTION_GROUPS[attention]
    mem = vllm_memory[attention]
    analytic = kv_bytes_per_token(LAYERS, groups, HIDDEN // HEADS, 2)
    assert kv_bytes_per_token_of(json.loads((Path(mem["dir"]) / "config.json").read_text()), "bf16") == analytic
    per_layer = mem["kv_bytes_per_token_per_layer"]
    assert len(per_layer) == LAYERS
    assert set(per_layer.values()) == {analytic // LAYERS} and sum(per_layer.values()) == analytic
    assert mem["kv_allocated_bytes"] == _kv_budget(groups)  # the budget is whole blocks: vLLM reserves exactly it
    # The weights vLLM holds are the checkpoint's bf16 tensors, also where its CPU build repacked the
    # linear layers into kernel-owned buffers and emptied their parameters (counted by shape then).
    # (the checkpoint is saved in fp32, served in bf16: half its tensor bytes)
    assert mem["weights_bytes"] == safetensors_payload_bytes(Path(mem["dir"]) / "model.safetensors") // 2


def test_kv_budget_is_whole_blocks_for_the_largest_load():
    per_token = kv_bytes_per_token(num_layers=2, num_kv_heads=1, head_dim=64, dtype_bytes=2)
    assert per_token == 512
    # 16 requests of 96 tokens at block 128: one block each, plus the null block
    assert kv_budget_bytes(per_token, [(16, 96), (1, 96)], 128, 128) == 17 * 128 * per_token
    # a request spanning two blocks needs both; headroom scales the blocks
    assert kv_budget_bytes(per_token, [(4, 130)], 128, 128) == 9 * 128 * per_token
    assert kv_budget_bytes(per_token, [(4, 130)], 128, 128, headroom=1.5) == 13 * 128 * per_token
    # never below one max_model_len request
    assert kv_budget_bytes(per_token, [(1, 10)], 32, 128) == 5 * 32 * per_token
    # MHA holds heads/groups times the KV of GQA/MQA of the same shape
    assert kv_bytes_per_token_of({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256}, "bf16") \
        == 4 * per_token


def test_transformers_fallback_engine(int4_dir, tmp_path):
    records = _serve("transformers", int4_dir, tmp_path / "hf")
    _check(records, "transformers", int4_dir, tmp_path / "hf")
    for r in records:  # weights measured; no KV reservation to report (a cache grows per batch)
        assert r["mem_weights_gb__source"] == "torch_parameter_bytes"
        assert r["mem_kv_reserved_gb"] is None and "grows a cache per batch" in r["mem_kv_reserved_gb__missing"]
        assert r["mem_runtime_gb"] is None and r["mem_runtime_gb__missing"]
        assert r["kv_bytes_per_token"] == kv_bytes_per_token(LAYERS, 2, HIDDEN // HEADS, 2)


_EVALUATE = """
import json, sys
from pathlib import Path
from effbench.evaluate.run import evaluate_cell
out = evaluate_cell(json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), "cpu")
print("RESULT=" + json.dumps(out, default=lambda o: o.item()))  # numpy scalars
"""


def _lm_eval(backend: str, model_dir: Path, precision: str, tmp_path: Path) -> dict:
    """evaluate_cell in its own process (vLLM's engine processes end with it)."""
    from effbench.evaluate.tasks import make_local_tasks

    make_local_tasks(tmp_path / "tasks", items_per_task=12, seed=0)
    s = {"model": "tiny", "precision": precision, "backend": backend, "dtype": "bf16",
         "tasks": ["effbench_mc_fact", "effbench_mc_arithmetic"], "metrics": {}, "num_fewshot": 0, "batch_size": 16,
         "limit": None, "max_model_len": 128, "threads": 1, "seed": 0, "vllm": VLLM}
    p = subprocess.run([sys.executable, "-c", _EVALUATE, json.dumps(s), str(model_dir), str(tmp_path / "tasks")],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-6000:]
    out = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT="))[len("RESULT="):])
    assert out["backend"] == backend
    assert set(out["tasks"]) == {"effbench_mc_fact", "effbench_mc_arithmetic"}  # controls are not tasks
    for v in out["tasks"].values():
        # This tokenizer maps every choice word to its unknown token: all four choices tie on
        # every item. Ties count 1/4 (lm-eval's argmax picks position 0: 3 of 12 golds, as
        # gold positions cycle), in the task and in both control twins (same lm-eval run).
        assert v["metric"] == "acc_tie" and v["n"] == 12 and v["ties"] == 12
        assert v["value"] == v["chance"] == 0.25 and v["stderr"] == 0 and v["lm_eval_acc"] == 0.25
        assert v["control"] == v["swapped"] == {"value": 0.25, "stderr": 0.0, "n": 12, "ties": 12}
        assert v["z_control"] is None and v["z_swapped"] is None  # no difference on any item
        assert v["measurable"] is False and v["equal_length_share"] == 1.0
    assert out["accuracy"] == pytest.approx(sum(v["value"] for v in out["tasks"].values()) / 2)
    # Each item's tie-aware score, keyed by lm-eval's doc_id, for the paired comparison of precisions
    # (the controls' are not kept): every item a 4-way tie, 1/4 each.
    assert out["items"] == {t: {str(i): 0.25 for i in range(12)} for t in out["tasks"]}
    return out


def test_lm_eval_scores_local_tasks_per_task_with_stderr(int4_dir, tmp_path):
    _lm_eval("hf", int4_dir, "int4", tmp_path)


def test_lm_eval_through_vllm(tiny, tmp_path):
    """The paper's setup (eval.model: vllm) on this CPU's vLLM build, at bf16 (loaded as bf16 from the
    fp32 checkpoint; the build has no int4 kernel here)."""
    pytest.importorskip("vllm")
    _lm_eval("vllm", tiny, "bf16", tmp_path)


@pytest.mark.parametrize("single_process", [False, True])
def test_a_kv_budget_over_the_device_is_an_oom_result(tiny, tmp_path, single_process):
    """vLLM's engine core fails in its own process ("Engine core initialization failed. See root
    cause above."); the stage names the root cause from its log and records the cell as `oom`.
    With ``vllm.single_process`` (the embedded default) the engine core's error reaches the stage
    itself: `oom` too."""
    pytest.importorskip("vllm")
    bf16_dir = quantize_by_script(tiny, tmp_path / "q", "bf16")
    s = _point_settings("vllm", "offline", "offline", 2, 2)
    s = {**s, "precision": "bf16",  # ~10^7 blocks: TBs of KV
         "vllm": {**VLLM, "kv_cache_headroom": 1e7, "single_process": single_process}}
    out, log_path = tmp_path / "out", tmp_path / "job.log"
    with log_path.open("w") as log_file:  # as the rule runs it: stdout and stderr to the job's log
        p = subprocess.run([sys.executable, str(ROOT / "scripts" / "inference.py"), "--settings",
                            json.dumps({"offline": s}), "--config-hash", "test", "--model-dir", str(bf16_dir),
                            "--out-dir", str(out)], stdout=log_file, stderr=subprocess.STDOUT, env=ENV, timeout=900)
    log_text = log_path.read_text()
    assert p.returncode == 0, log_text[-6000:]  # a result, not a failed job (the grid goes on)
    (r,) = read_records([out / "offline" / "record.parquet"]).to_pylist()
    assert r["status"] == "oom"
    if not single_process:
        assert "Engine core initialization failed" in r["status_detail"]
    assert "less than requested memory for kv" in r["status_detail"]  # the engine core's own words
