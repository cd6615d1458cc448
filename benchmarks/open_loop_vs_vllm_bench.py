"""Our open-loop load point beside vLLM's own ``vllm bench serve`` on the same checkpoint.

Run in the inference environment, from the repository root::

    PYTHONPATH=src nice -n 10 .venvs/inference/bin/python benchmarks/open_loop_vs_vllm_bench.py \\
        --model-dir results/quantize/xs-gqa/bf16/model --rate 4 --requests 40 --rounds 2

What is compared, per round (one A/B pair, the order alternating between rounds):

- vLLM: ``vllm serve`` started on the checkpoint with the same engine settings (dtype, seed,
  max_model_len, max_num_seqs, block size, eager mode, KV-cache dtype), then ``vllm bench
  serve --request-rate R --seed S --dataset-name random --random-input-len P --random-output-len
  O --ignore-eos --goodput ttft:X tpot:Y`` over HTTP (streamed completions), its own arrivals
  (Poisson, rescaled to end at n / R) and metrics; the server is stopped after the round.
- ours: the stage's own ``serve_point`` (``SharedEngine`` + a ``Monitor``, as
  scripts/inference.py runs it) on a ``mode: rate`` load point with the same rate, request count,
  lengths and SLO, ``repeats`` repeats; the record's figures.

Figures: request throughput (completed / span from the start of arrivals to the last token),
mean TTFT, mean TPOT, goodput (req/s meeting both SLOs). Each side's per-round value; the ratio
ours / vLLM of the means over rounds with a percentile-bootstrap 95 % interval over the rounds
(``serving_vs_vllm_bench._boot``) and each round's ratio.

Known differences that remain: vLLM's client is an HTTP server + an asyncio client (tokenising,
detokenising, SSE streaming: TTFT includes them, and its TTFT runs from when the client sent the
request, ours from the scheduled arrival); vLLM's random prompts are text re-tokenised (its
dataset adjusts them to the length), ours token ids; vLLM samples with its defaults (greedy
here: ``--temperature 0``), ours greedy; the server runs vLLM's engine core in its own process
(``vllm.single_process`` off for both sides here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_vs_vllm_bench import _boot, _run  # noqa: E402  (the same bootstrap and child runner)

FIGURES = ("request_throughput_rps", "ttft_s_mean", "tpot_s_mean", "goodput_rps")


def settings_for(a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """A rate load point's resolved settings, as the lead's config resolves one."""
    return {"model": "bench", "precision": a.precision, "load_point": f"rate{a.rate:g}", "engine": "vllm",
            "dtype": a.dtype, "precision_set": "paper",
            "point": {"mode": "rate", "rate": a.rate, "arrivals": "poisson", "requests": a.requests,
                      "prompt_len": a.prompt_len, "output_len": a.output_len, "concurrency": a.requests,
                      "slo": {"ttft_ms": a.slo_ttft_ms, "tpot_ms": a.slo_tpot_ms}},
            "warmup_requests": 1, "repeats": a.repeats, "min_seconds": 0, "threads": a.threads, "device": "cpu",
            "seed": seed, "measure": {"interval_s": 0.1},
            "vllm": {"max_model_len": a.max_model_len, "max_num_seqs": a.max_num_seqs, "enforce_eager": True,
                     "gpu_memory_utilization": 0.9, "cpu_kvcache_gb": 1, "block_size": a.block_size,
                     "kv_cache_headroom": 1.0, "single_process": False, "kv_cache_dtype": a.kv_cache_dtype}}


def env_for(s: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "OMP_NUM_THREADS": str(s["threads"])}


# --- side A: vllm serve + vllm bench serve ------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def run_vllm(vllm: Path, s: dict[str, Any], model_dir: Path, kv_bytes: int) -> dict[str, Any]:
    from effbench.inference.engines import TORCH_DTYPES

    lp, v, port = s["point"], s["vllm"], _free_port()
    serve = [str(vllm), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
             "--dtype", TORCH_DTYPES[s["dtype"]], "--seed", str(s["seed"]), "--max-model-len", str(v["max_model_len"]),
             "--max-num-seqs", str(v["max_num_seqs"]), "--block-size", str(v["block_size"]), "--enforce-eager",
             "--kv-cache-memory-bytes", str(kv_bytes), "--kv-cache-dtype", v["kv_cache_dtype"],
             ]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="olbench-") as tmp:
        log = open(Path(tmp) / "serve.log", "w")
        server = subprocess.Popen(serve, env=env_for(s), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"vllm serve exited {server.returncode}:\n"
                                     f"{(Path(tmp) / 'serve.log').read_text()[-4000:]}")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except OSError:
                    time.sleep(1)
            print(f"    {time.monotonic() - t0:5.1f} s  vllm serve up", flush=True)
            bench = [str(vllm), "bench", "serve", "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
                     "--model", str(model_dir), "--tokenizer", str(model_dir), "--dataset-name", "random",
                     "--random-input-len", str(lp["prompt_len"]), "--random-output-len", str(lp["output_len"]),
                     "--num-prompts", str(lp["requests"] * s["repeats"]), "--request-rate", str(lp["rate"]),
                     "--seed", str(s["seed"]), "--ignore-eos", "--temperature", "0",
                     "--goodput", f"ttft:{lp['slo']['ttft_ms']}", f"tpot:{lp['slo']['tpot_ms']}",
                     "--save-result", "--result-dir", tmp, "--result-filename", "bench.json", "--disable-tqdm"]
            _run(bench, env_for(s))
            got = json.loads((Path(tmp) / "bench.json").read_text())
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    return {"request_throughput_rps": got["request_throughput"], "ttft_s_mean": got["mean_ttft_ms"] / 1000,
            "tpot_s_mean": got["mean_tpot_ms"] / 1000, "goodput_rps": got["request_goodput"],
            "completed": got["completed"], "duration_s": got["duration"], "cmd": " ".join(bench)}


# --- side B: our serving stage --------------------------------------------------------------

def ours_child(s: dict[str, Any], model_dir: Path, out: Path) -> None:
    from effbench.inference.serve import SharedEngine, serve_point
    from effbench.measure.monitor import Monitor

    shared = SharedEngine(s, model_dir, "cpu")
    try:
        with Monitor(device="cpu", interval_s=s["measure"]["interval_s"]) as mon:
            rec = serve_point(s, shared, mon)
    finally:
        shared.close()
    out.write_text(json.dumps({**{k: rec[k].value for k in FIGURES},
                               "goodput_frac": rec["goodput_frac"].value,
                               "queue_s_mean": rec["queue_s_mean"].value, "prefill_s_mean": rec["prefill_s_mean"].value,
                               "decode_s_mean": rec["decode_s_mean"].value, "seconds": rec["seconds"],
                               "kv_cache_budget_bytes": shared.kv_cache_bytes}))


def run_ours(s: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="olbench-") as tmp:
        out = Path(tmp) / "ours.json"
        _run([sys.executable, __file__, "ours", "--settings", json.dumps(s), "--model-dir", str(model_dir),
              "--out", str(out)], env_for(s))
        return json.loads(out.read_text())


# --- statistics -------------------------------------------------------------------------------

def summarize(rounds: list[dict[str, dict[str, Any]]], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out = {}
    for k in FIGURES:
        ours = [r["ours"][k] for r in rounds]
        theirs = [r["vllm"][k] for r in rounds]
        ratio = statistics.fmean(ours) / statistics.fmean(theirs) if statistics.fmean(theirs) else None
        out[k] = {"ours": ours, "vllm": theirs, "ours_over_vllm": ratio,
                  "ci95": _boot(ours, theirs, rng) if ratio is not None and all(theirs) else None,
                  "per_round": [o / t if t else None for o, t in zip(ours, theirs)]}
    return out


def report(summary: dict[str, Any]) -> str:
    lines = []
    for k, f in summary.items():
        ci = f"[{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}]" if f["ci95"] else "[n/a]"
        ratio = f"{f['ours_over_vllm']:.3f}" if f["ours_over_vllm"] is not None else "n/a"
        lines.append(f"  {k:<24} ours {statistics.fmean(f['ours']):.4f}  vLLM {statistics.fmean(f['vllm']):.4f}"
                     f"   ours/vLLM {ratio} {ci}  rounds: "
                     + ", ".join("n/a" if x is None else f"{x:.3f}" for x in f["per_round"]))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    child = sub.add_parser("ours", help="internal: our side, in its own process")
    child.add_argument("--settings", required=True)
    child.add_argument("--model-dir", type=Path, required=True)
    child.add_argument("--out", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, default=ROOT / "results" / "quantize" / "xs-gqa" / "bf16" / "model")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--rate", type=float, default=4.0)
    p.add_argument("--requests", type=int, default=40, help="per repeat (vLLM: requests × repeats prompts)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--slo-ttft-ms", type=float, default=500.0)
    p.add_argument("--slo-tpot-ms", type=float, default=100.0)
    p.add_argument("--max-model-len", type=int, default=128)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=2, help="A/B pairs (the order alternates; round r seeds seed + r)")
    p.add_argument("--vllm", type=Path, default=Path(sys.executable).parent / "vllm")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "open_loop_vs_vllm_bench.json")
    a = p.parse_args()
    if a.cmd == "ours":
        ours_child(json.loads(a.settings), a.model_dir, a.out)
        return

    sys.path.insert(0, str(ROOT / "src"))
    from effbench.inference.memory import kv_budget

    started = dt.datetime.now(dt.timezone.utc)
    rounds, cmd = [], ""
    for r in range(a.rounds):
        s = settings_for(a, a.seed + r)
        kv = kv_budget(s, a.model_dir, [s["point"]])  # the KV cache ours reserves: the server's too
        print(f"round {r + 1}/{a.rounds}", flush=True)
        sides = {"vllm": lambda: run_vllm(a.vllm, s, a.model_dir, kv), "ours": lambda: run_ours(s, a.model_dir)}
        got = {}
        for name in (["vllm", "ours"] if r % 2 == 0 else ["ours", "vllm"]):
            got[name] = sides[name]()
        cmd = got["vllm"].pop("cmd")
        rounds.append(got)
        print(json.dumps(got), flush=True)
    summary = summarize(rounds, a.seed)
    print(report(summary))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "model_dir": str(a.model_dir), "args": {k: str(v) for k, v in vars(a).items()},
        "vllm_bench_cmd": cmd, "summary": summary, "raw": rounds,
    }, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
