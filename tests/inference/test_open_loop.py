"""An open-loop load point for real: vLLM (the CPU build here) serves requests arriving at a rate,
through the stage's own entry point, beside a closed-loop point with an SLO no request can meet;
goodput, achieved request throughput and the queue / prefill / decode split in the records. The
engine holds its KV cache in fp8 (``vllm.kv_cache_dtype``), which the budget counts at 1 byte."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from quantize_by_script import QUANTIZE_PY, quantize_by_script
from record_consistency import check_record
from test_inference import ENV, HEADS, HIDDEN, LAYERS, ROOT, VLLM, _tiny_checkpoint

from effbench.inference.kv_cache import kv_bytes_per_token
from effbench.record import read_records

RATE, REQUESTS, OUTPUT = 8.0, 12, 8


def _settings(point: str, lp: dict) -> dict:
    return {"model": "tiny", "precision": "bf16", "load_point": point, "engine": "vllm", "dtype": "bf16",
            "precision_set": "paper", "point": {"prompt_len": 16, "output_len": OUTPUT, **lp},
            "warmup_requests": 1, "repeats": 2, "min_seconds": 0, "threads": 1, "device": "cpu", "seed": 0,
            "measure": {"interval_s": 0.1}, "vllm": {**VLLM, "kv_cache_dtype": "fp8"}}


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    if not QUANTIZE_PY.exists():
        pytest.skip("the quantization environment is missing: run bash scripts/setup.sh")
    tmp = tmp_path_factory.mktemp("open_loop")
    return quantize_by_script(_tiny_checkpoint(tmp / "tiny", kv_heads=2), tmp / "q", "bf16")


@pytest.fixture(scope="module")
def records(bf16_dir, tmp_path_factory) -> list[dict]:
    pytest.importorskip("vllm")
    tmp, model = tmp_path_factory.mktemp("open_loop_out"), bf16_dir
    points = {
        # 12 requests at 8/s: 1.5 s of arrivals per repeat; the cap is every request (vLLM batches 8)
        "rate8": _settings("rate8", {"mode": "rate", "rate": RATE, "arrivals": "poisson", "requests": REQUESTS,
                                     "concurrency": REQUESTS, "slo": {"ttft_ms": 60_000.0, "tpot_ms": 60_000.0}}),
        "c2": _settings("c2", {"mode": "concurrency", "requests": 4, "concurrency": 2,
                               "slo": {"ttft_ms": 1e-6, "tpot_ms": 1e-6}}),
    }
    out = tmp / "out"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "inference.py"), "--settings", json.dumps(points),
                        "--config-hash", "test", "--model-dir", str(model), "--out-dir", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-6000:])
    rs = read_records([out / "rate8" / "record.parquet", out / "c2" / "record.parquet"]).to_pylist()
    for r, point in zip(rs, points):
        check_record(r, out / point / "samples.parquet")
    return rs


def test_open_loop_point_served_by_vllm(records):
    r = records[0]
    assert r["status"] == "ok" and r["engine"] == "vllm"
    assert (r["load_mode"], r["request_rate_rps"], r["arrivals"]) == ("rate", RATE, "poisson")
    assert (r["slo_ttft_ms"], r["slo_tpot_ms"]) == (60_000.0, 60_000.0)
    assert r["kv_cache_dtype"] == "fp8" and r["precision_set"] == "paper"
    # vLLM's fp8 KV pages hold 1 byte per element, as the budget counts them (the model is bf16: 2)
    per_token = kv_bytes_per_token(LAYERS, 2, HIDDEN // HEADS, 1)
    assert r["kv_bytes_per_token"] == per_token
    # min(12 requests, max_num_seqs 8) × 1 block of 128 tokens, plus the null block
    assert r["kv_cache_budget_bytes"] == 9 * 128 * per_token
    assert r["mem_kv_reserved_gb"] == pytest.approx(r["kv_cache_budget_bytes"] / 1e9, rel=1e-12)
    assert r["samples"] == 2 * REQUESTS and r["tokens"] == 2 * REQUESTS * OUTPUT
    # each repeat's last request arrives n / rate after its start and finishes later: the achieved
    # request throughput cannot exceed the offered rate; a tiny model keeps up with it (generous bound)
    assert RATE / 4 < r["request_throughput_rps"] <= RATE
    iv = (r["request_throughput_rps__ci_low"], r["request_throughput_rps__ci_high"])
    assert iv[0] <= r["request_throughput_rps"] <= iv[1] and r["request_throughput_rps__ci_n"] == 2
    # SLOs of a minute: every request is good
    assert r["goodput_frac"] == 1.0 and r["goodput_rps"] == pytest.approx(r["request_throughput_rps"])
    # vLLM's own per-request stats split each request: the parts sum to its E2E
    parts = r["queue_s_mean"] + r["prefill_s_mean"] + r["decode_s_mean"]
    assert parts == pytest.approx(r["e2e_s_mean"], abs=1e-3)
    assert 0 < r["prefill_s_mean"] <= r["ttft_s_mean"] and 0 < r["decode_s_mean"] < r["e2e_s_mean"]
    assert r["queue_s_mean"] >= 0
    for k in ("prefill_energy_j", "decode_energy_j", "prefill_energy_j_per_token", "decode_energy_j_per_token"):
        # measured from the energy counter at the engine steps' edges, or missing with a reason: never a guess
        assert (r[k] is not None and r[k] >= 0) or r[k + "__missing"]


def test_goodput_on_a_closed_loop_point(records):
    r = records[1]
    assert (r["load_mode"], r["request_rate_rps"], r["arrivals"]) == ("concurrency", None, None)
    assert r["request_throughput_rps"] > 0
    assert r["goodput_frac"] == 0.0 and r["goodput_rps"] == 0.0  # no request starts within a nanosecond
    assert r["queue_s_mean"] + r["prefill_s_mean"] + r["decode_s_mean"] == pytest.approx(r["e2e_s_mean"], abs=1e-3)


def test_transformers_serves_arrivals_first_come_first_served(bf16_dir):
    """The fallback engine in open loop: each request is stamped at its scheduled arrival, batches
    take the requests that have arrived (up to the cap), and each request's split sums to its E2E."""
    import time

    from effbench.inference.engines import TransformersEngine
    from effbench.inference.phases import StepLog, split

    e = TransformersEngine(bf16_dir, "bf16", "cpu", 1)
    offsets = [0.05, 0.06, 0.07, 0.6]  # three close together, one well after
    prompts = [[5 + i] * 16 for i in range(4)]
    log = StepLog(lambda: 0.0)  # a counter that stays at 0 J
    t = time.monotonic()
    traces = e.run(prompts, OUTPUT, 2, arrivals=offsets, steps=log)
    assert [tr.tokens for tr in traces] == [OUTPUT] * 4
    origin = traces[0].submitted - offsets[0]
    assert t <= origin <= traces[0].token_times[0]
    assert [tr.submitted - origin for tr in traces] == pytest.approx(offsets, abs=1e-9)  # scheduled arrivals
    assert traces[3].token_times[0] >= origin + offsets[3]  # not served before it arrived
    for tr in traces:
        q, p, d = split(tr)
        assert q >= 0 and p > 0 and d > 0 and q + p + d == pytest.approx(tr.e2e())
    # one prefill step per batch (its prompts' tokens), then one decode step per further token
    assert log.prefill_tokens == 4 * 16 and log.decode_tokens == 4 * (OUTPUT - 1)
    batches = sum(1 for s in log.steps if s.prefill_tokens)
    assert 2 <= batches <= 4  # the cap of 2 splits the first three; the last comes alone
    assert all(s.e0 == s.e1 == 0.0 for s in log.steps)
