"""Our serving stage beside vLLM's own ``vllm bench latency``, on the same checkpoint and load point.

Run in the inference environment, from the repository root (the checkpoints come from the
quantize stage, e.g. ``snakemake results/quantize/xs-gqa/{bf16,int4}/model/effbench.json``)::

    PYTHONPATH=src nice -n 10 .venvs/inference/bin/python benchmarks/serving_vs_vllm_bench.py \\
        --model xs-gqa --precisions bf16 int4 --rounds 3 --iters 10

What is compared. ``vllm bench latency`` times one ``LLM.generate`` of a batch of
``--batch-size`` prompts of ``--input-len`` random token ids, each generating exactly
``--output-len`` tokens (``ignore_eos``): one latency per iteration = submission of the batch
to its last token. Our offline load point (``mode: offline``) submits all ``requests`` at once
and steps the engine until all finish (:class:`effbench.inference.engines.VllmEngine`), so:

- ``vllm``         : vLLM's per-iteration latency (its ``latencies`` list) = one batch, end to end.
- ``ours_e2e``     : per repeat, the mean over the batch's requests of E2E (submission to last
                     token): what the stage's record holds as ``e2e_s_mean`` / ``al_s_per_request``
                     (the record pools every repeat's requests; here it is kept per repeat).
- ``ours_batch``   : per repeat, the wall time of the whole batch (the stage's IT denominator);
                     the closest figure to vLLM's, as the last request finishes last.

Not per-token figures (TTFT/TPOT/ITL): ``vllm bench latency`` has none.

Each side runs alone, in its own process, one after the other (A B, then B A in the next round:
drift and order hit both alike), with the same engine settings (those the pipeline resolves
for the cell: dtype, max_model_len, max_num_seqs, eager mode, seed, CPU threads, KV cache
space and ``vllm.single_process``: the engine core in the calling process on both sides) and
the same number of full-batch warm-up iterations. Our side is the stage's code
itself: ``SharedEngine`` + ``serve_point`` under a ``Monitor``, as scripts/inference.py runs it;
a thin wrapper only records each ``run``'s traces. Known differences that remain: vLLM's
benchmark samples with temperature 1.0 (ours: greedy), reuses one set of prompts (ours: new
prompts per repeat) and sets ``enable_prefix_caching`` off (ours: vLLM's default; passed to the
benchmark too, see ``--prefix-caching``).

Output: a table per precision (mean ± 95 % CI of each figure, the ratio ours/vLLM with a
bootstrap 95 % CI, the ratio of each round separately, and int4/bf16 by both) and a JSON file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BOOT = 5000  # bootstrap resamples
SOURCES = ("vllm", "ours_e2e", "ours_batch")


# --- settings shared by both sides ------------------------------------------------------

def cell_settings(config_path: Path, model: str, precision: str, point: str) -> dict[str, Any]:
    """The inference cell's resolved settings, exactly as the pipeline passes them."""
    import yaml

    from effbench.config import plan

    config = yaml.safe_load(config_path.read_text())
    jobs = plan(config, refuse_unfit=False).serve.serving_job(model, precision)
    if point not in jobs:
        raise SystemExit(f"no inference cell {model}/{precision}/{point} in {config_path}")
    s = jobs[point]
    if s["engine"] != "vllm" or s["point"]["mode"] != "offline":
        raise SystemExit(f"{point}: only an offline load point served by vLLM compares with `vllm bench latency`")
    return s


def engine_env(s: dict[str, Any]) -> dict[str, str]:
    """The environment both sides run in (VllmEngine sets these only when absent)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"),
            "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(s["vllm"]["cpu_kvcache_gb"]))),
            "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(s["threads"]),
            # vllm.single_process: both sides run the engine in the calling process
            **({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if s["vllm"].get("single_process") else {})}


# --- side A: vLLM's benchmark -----------------------------------------------------------

def vllm_bench_cmd(vllm: Path, s: dict[str, Any], model_dir: Path, warmup: int, iters: int, out: Path,
                   prefix_caching: bool) -> list[str]:
    from effbench.inference.engines import TORCH_DTYPES
    from effbench.torch_device import pick_device

    device = pick_device(s["device"])
    lp, v = s["point"], s["vllm"]
    cmd = [str(vllm), "bench", "latency", "--model", str(model_dir), "--tokenizer", str(model_dir),
           "--dtype", TORCH_DTYPES[s["dtype"]], "--seed", str(s["seed"]),
           "--max-model-len", str(v["max_model_len"]), "--max-num-seqs", str(v["max_num_seqs"]),
           "--batch-size", str(lp["requests"]), "--input-len", str(lp["prompt_len"]),
           "--output-len", str(lp["output_len"]), "--num-iters-warmup", str(warmup), "--num-iters", str(iters),
           "--disable-detokenize", "--disable-log-stats", "--output-json", str(out)]
    if v["enforce_eager"] or device == "cpu":  # as VllmEngine decides
        cmd.append("--enforce-eager")
    cmd.append("--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching")
    if v.get("single_process"):  # as VllmEngine: no worker process either
        cmd += ["--distributed-executor-backend", "uni"]
    return cmd


def vllm_bench_child(vocab: int, argv: list[str]) -> None:
    """``vllm bench latency`` through vLLM's own CLI entry point, with one change: its prompt ids
    are drawn below the model's vocabulary size instead of below 10 000 (a fixed bound in
    vllm/benchmarks/latency.py that our 1 024-token models reject). Timing, warm-up, batching
    and the JSON are vLLM's code."""
    import types

    import numpy as np
    import vllm.benchmarks.latency as latency
    from vllm.entrypoints.cli.main import main as vllm_main

    class Numpy:  # numpy as latency.py sees it, but for random.randint's bound
        random = types.SimpleNamespace(randint=lambda high, size: np.random.randint(min(high, vocab), size=size))

        def __getattr__(self, name: str) -> Any:
            return getattr(np, name)

    latency.np = Numpy()
    sys.argv = ["vllm", *argv]
    vllm_main()


def run_vllm_bench(vllm: Path, s: dict[str, Any], model_dir: Path, warmup: int, iters: int,
                   prefix_caching: bool) -> dict[str, Any]:
    from effbench.inference.serve import vocab_of

    with tempfile.TemporaryDirectory(prefix="vbench-") as tmp:
        out = Path(tmp) / "latency.json"
        cmd = vllm_bench_cmd(vllm, s, model_dir, warmup, iters, out, prefix_caching)
        _run([sys.executable, __file__, "vllm-bench", "--vocab", str(vocab_of(model_dir)[0]), "--", *cmd[1:]],
             engine_env(s))
        got = json.loads(out.read_text())
    return {"vllm": got["latencies"], "cmd": " ".join(cmd)}


# --- side B: our serving stage ------------------------------------------------------------

class _Recorder:
    """The engine as serve_point sees it, keeping each run's traces."""

    def __init__(self, engine: Any) -> None:
        self.inner, self.name, self.trace_source = engine, engine.name, engine.trace_source
        self.batch_cap = engine.batch_cap
        self.runs: list[tuple[float, list[Any]]] = []

    def run(self, prompts: list[list[int]], output_len: int, concurrency: int, tag: str = "r") -> list[Any]:
        t0 = time.monotonic()
        traces = self.inner.run(prompts, output_len, concurrency, tag=tag)
        self.runs.append((time.monotonic() - t0, traces))
        return traces

    def close(self) -> None:
        self.inner.close()


def ours_child(s: dict[str, Any], model_dir: Path, warmup: int, iters: int, out: Path) -> None:
    """Runs in its own process (``ours`` subcommand): the stage's serve_point, measured repeats only."""
    from effbench.inference.serve import SharedEngine, make_prompts, serve_point, vocab_of
    from effbench.measure.monitor import Monitor
    from effbench.torch_device import pick_device

    device = pick_device(s["device"])
    shared = SharedEngine(s, model_dir, device)
    try:
        rec = _Recorder(shared.get())
        shared.engine = rec
        lp = s["point"]
        vocab, special = vocab_of(model_dir)
        for w in range(warmup):  # full batches, as vLLM's --num-iters-warmup
            rec.run(make_prompts(lp["requests"], lp["prompt_len"], vocab, special, s["seed"], f"warm{w}"),
                    lp["output_len"], lp["concurrency"], tag=f"warm{w}")
        rec.runs.clear()
        measured = {**s, "warmup_requests": 0, "repeats": iters, "min_seconds": 0}
        with Monitor(device=device, interval_s=s["measure"]["interval_s"]) as mon:
            record = serve_point(measured, shared, mon)
    finally:
        shared.close()
    out.write_text(json.dumps({
        "ours_batch": [sec for sec, _ in rec.runs],
        "ours_e2e": [statistics.fmean(t.e2e() for t in traces) for _, traces in rec.runs],
        "record_e2e_s_mean": record["e2e_s_mean"].value,
        "record_it_tokens_per_s": record["it_tokens_per_s"].value,
    }))


def run_ours(s: dict[str, Any], model_dir: Path, warmup: int, iters: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vbench-") as tmp:
        out = Path(tmp) / "ours.json"
        _run([sys.executable, __file__, "ours", "--settings", json.dumps(s), "--model-dir", str(model_dir),
              "--warmup", str(warmup), "--iters", str(iters), "--out", str(out)], engine_env(s))
        return json.loads(out.read_text())


def _run(cmd: list[str], env: dict[str, str]) -> None:
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)[:300]}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    print(f"    {time.monotonic() - t0:5.1f} s  {cmd[2]}", flush=True)


# --- statistics -------------------------------------------------------------------------------

def _boot(xs: list[float], ys: list[float] | None, rng: random.Random) -> tuple[float, float]:
    """Percentile-bootstrap 95 % CI of mean(xs), or of mean(xs) / mean(ys) (independent resamples)."""
    vals = []
    for _ in range(BOOT):
        mx = statistics.fmean(rng.choices(xs, k=len(xs)))
        vals.append(mx / statistics.fmean(rng.choices(ys, k=len(ys))) if ys else mx)
    vals.sort()
    return vals[int(0.025 * BOOT)], vals[int(0.975 * BOOT) - 1]


def summarize(rounds: dict[str, list[dict[str, Any]]], seed: int) -> dict[str, Any]:
    """Per precision: each figure's mean and CI; ours/vLLM; per-round ratios; then int4/bf16."""
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    for prec, rs in rounds.items():
        pooled = {k: [x for r in rs for x in r[k]] for k in SOURCES}
        fig = {k: {"mean_s": statistics.fmean(v), "ci95_s": _boot(v, None, rng), "n": len(v)}
               for k, v in pooled.items()}
        ratio = {k: {"ratio": fig[k]["mean_s"] / fig["vllm"]["mean_s"], "ci95": _boot(pooled[k], pooled["vllm"], rng),
                     "per_round": [statistics.fmean(r[k]) / statistics.fmean(r["vllm"]) for r in rs]}
                 for k in SOURCES[1:]}
        out[prec] = {"figures": fig, "ours_over_vllm": ratio,
                     "record_e2e_s_mean_per_round": [r["record_e2e_s_mean"] for r in rs], "_pooled": pooled}
    if {"bf16", "int4"} <= out.keys():
        a, b = out["int4"]["_pooled"], out["bf16"]["_pooled"]
        out["int4_over_bf16"] = {k: {"ratio": statistics.fmean(a[k]) / statistics.fmean(b[k]),
                                     "ci95": _boot(a[k], b[k], rng)} for k in SOURCES}
    for prec in rounds:
        out[prec].pop("_pooled")
    return out


def report(summary: dict[str, Any]) -> str:
    lines = []
    for prec, r in summary.items():
        if prec == "int4_over_bf16":
            continue
        lines.append(f"{prec}:")
        for k, f in r["figures"].items():
            lo, hi = f["ci95_s"]
            line = f"  {k:<10} {f['mean_s']:.4f} s  [{lo:.4f}, {hi:.4f}]  n={f['n']}"
            if k in r["ours_over_vllm"]:
                q = r["ours_over_vllm"][k]
                line += (f"   ours/vLLM {q['ratio']:.3f} [{q['ci95'][0]:.3f}, {q['ci95'][1]:.3f}]"
                         f"  rounds: {', '.join(f'{x:.3f}' for x in q['per_round'])}")
            lines.append(line)
    if "int4_over_bf16" in summary:
        lines.append("int4/bf16 (>1: int4 slower):")
        for k, q in summary["int4_over_bf16"].items():
            lines.append(f"  {k:<10} {q['ratio']:.3f} [{q['ci95'][0]:.3f}, {q['ci95'][1]:.3f}]")
    return "\n".join(lines)


# --- driver -------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    child = sub.add_parser("ours", help="internal: one run of our side, in its own process")
    child.add_argument("--settings", required=True)
    child.add_argument("--model-dir", type=Path, required=True)
    child.add_argument("--warmup", type=int, required=True)
    child.add_argument("--iters", type=int, required=True)
    child.add_argument("--out", type=Path, required=True)
    bench = sub.add_parser("vllm-bench", help="internal: `vllm bench latency`, prompt ids within the vocabulary")
    bench.add_argument("--vocab", type=int, required=True)
    bench.add_argument("argv", nargs=argparse.REMAINDER)
    p.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    p.add_argument("--model", default="xs-gqa")
    p.add_argument("--precisions", nargs="+", default=["bf16", "int4"])
    p.add_argument("--load-point", default="offline")
    p.add_argument("--results", type=Path, default=ROOT / "results", help="where the quantize stage wrote models")
    p.add_argument("--rounds", type=int, default=3, help="A/B pairs per precision (the order alternates)")
    p.add_argument("--iters", type=int, default=10, help="measured batches per run, each side")
    p.add_argument("--warmup", type=int, default=2, help="full-batch warm-up iterations per run, each side")
    p.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                   help="for vLLM's benchmark (its default is off; our engine runs with vLLM's default, on)")
    p.add_argument("--vllm", type=Path, default=Path(sys.executable).parent / "vllm")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_vs_vllm_bench.json")
    a = p.parse_args()
    if a.cmd == "ours":
        ours_child(json.loads(a.settings), a.model_dir, a.warmup, a.iters, a.out)
        return
    if a.cmd == "vllm-bench":
        vllm_bench_child(a.vocab, [x for x in a.argv if x != "--"])
        return

    sys.path.insert(0, str(ROOT / "src"))
    settings = {prec: cell_settings(a.config, a.model, prec, a.load_point) for prec in a.precisions}
    dirs = {prec: a.results / "quantize" / a.model / prec / "model" for prec in a.precisions}
    started = dt.datetime.now(dt.timezone.utc)
    rounds: dict[str, list[dict[str, Any]]] = {prec: [] for prec in a.precisions}
    cmds: dict[str, str] = {}
    for r in range(a.rounds):
        for i, prec in enumerate(a.precisions):
            print(f"round {r + 1}/{a.rounds} {prec}", flush=True)
            s, d = settings[prec], dirs[prec]
            sides = [lambda: run_vllm_bench(a.vllm, s, d, a.warmup, a.iters, a.prefix_caching),
                     lambda: run_ours(s, d, a.warmup, a.iters)]
            got: dict[str, Any] = {}
            for side in sides if (r * len(a.precisions) + i) % 2 == 0 else sides[::-1]:
                got.update(side())
            cmds[prec] = got.pop("cmd")
            rounds[prec].append(got)
    summary = summarize(rounds, seed=settings[a.precisions[0]]["seed"])
    print(report(summary))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "model": a.model, "load_point": a.load_point, "rounds": a.rounds, "iters": a.iters, "warmup": a.warmup,
        "settings": settings, "vllm_bench_cmd": cmds, "summary": summary, "raw": rounds,
    }, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
