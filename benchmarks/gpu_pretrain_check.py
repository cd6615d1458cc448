"""GPU check of the pretraining stage at the paper's Qwen2.5-0.5B shape (GQA, sequence 2048,
micro-batch 4, bf16 weights over fp32 masters, clipping 1.0) on one GPU. One run does:

1. machine facts: torch / CUDA / megatron versions, the GPU's identity, clocks and power limit
   (NVML), the host CPU, the host's kernel-launch rate, and the energy counter against polled
   power over a window of 8192³ bf16 matmuls (its TFLOP/s is comparable with earlier runs);
2. the regression probe (docs/gpu-checks.md, "121.6 → 140 ms"): the stage's own `train_step`
   (its sampler and loop) timed as is, under the 20 Hz measurement monitor, and with the later
   run's multi-tensor gradient copy into the masters, then as is again;
3. the speed levers of issue 13 part 4 (`pretrain_levers.py`), each built from the stage's code
   and timed side by side with the baseline in this process: step time (median, 95 % interval),
   MFU against a stated peak, torch's max allocated memory, the ratio to the baseline.

    python benchmarks/gpu_pretrain_check.py --out $OUT [--levers baseline fused_ce ...] [--no-probe]
    python benchmarks/gpu_pretrain_check.py --out $OUT --levers none --variants gqa mqa   # stage cells only

A lever's error is its row; the others still run. Levers and probe variants are skipped (and
say so) once --budget-s is spent. Prints a table and one JSON line per row; writes everything to
benchmarks/results/gpu_pretrain_levers.json and, with --out, to $OUT/gpu_pretrain_levers.json
(rewritten after every row, so a run cut short keeps what it measured).

--variants runs whole stage cells (run_cell + train_cell: records and samples under --out), as
the first GPU checks did. Data are random tokens over Qwen2.5's vocabulary (151936): the timing
is the real shape's, the losses mean nothing beyond comparing levers at the same step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from effbench import config as cfg  # noqa: E402
from effbench.data.tokens import BinWriter, write_meta  # noqa: E402
from effbench.measure import formulas  # noqa: E402
from effbench.record import read_records  # noqa: E402
from effbench.runner import Cell, run_cell, setup_logging  # noqa: E402

import pretrain_levers as pl  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)

VOCAB = 151936
RESULTS = ROOT / "benchmarks" / "results" / "gpu_pretrain_levers.json"
PEAK_SOURCE = "stated: H100/H200 SXM bf16 dense datasheet"
UNMEASURED = [
    "Transformer Engine's layer spec (not installed on the lent machine; the cluster's fast path)",
    "overlapped gradient reduction and the distributed optimizer at world size > 1 (one GPU here)",
    "a larger micro-batch that the memory saved by fused_ce / recompute would allow (not swept)",
    "MoE grouped GEMM and MLA / MoE cells under these levers (GQA only here)",
    "CUDA graphs and fp8 (not among the issue's levers)",
]


def random_corpus(out: Path, vocab: int, train_tokens: int, val_tokens: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sha, nbytes = {}, {}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        with BinWriter(out / f"{split}.bin", "uint32") as w:
            w.write(rng.integers(0, vocab, size=n, dtype=np.int64))
        sha[split], nbytes[split] = w.sha256, n * 4
    write_meta(out, {
        "format_version": 1, "generator": "benchmarks/gpu_pretrain_check.py (uniform random tokens)",
        "generator_version": "1", "seed": 0, "vocab_size": vocab, "dtype": "uint32", "eos_id": 0, "pad_id": 0,
        "tokens": {"train": train_tokens, "val": val_tokens}, "documents": {"train": 1, "val": 1},
        "files": {"train": "train.bin", "val": "val.bin"}, "sha256": sha, "bytes": nbytes,
        "tokenizer_dir": None, "source": {"kind": "random"},
    })


def paper_config(micro_batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """config/paper.yaml on one GPU with the check's batch (micro = global: no accumulation)."""
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    paper["device"] = "cuda"
    paper["pretrain"]["parallel"] = {"nodes": 1, "gpus_per_node": 1}  # one GPU here
    paper["measure"]["interval_s"] = 0.05
    paper["pretrain"]["training"].update(
        micro_batch_size=micro_batch, global_batch_size=micro_batch, train_steps=steps, warmup_steps=2,
        eval_batches=2, checkpoint_interval=10_000, warmup_measure_steps=warmup)
    return paper


# ------------------------------------------------------------------------------------------
# 1. Machine facts
# ------------------------------------------------------------------------------------------


def _read(fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
        return value.decode() if isinstance(value, bytes) else value
    except Exception as exc:  # noqa: BLE001 - a fact the driver does not give is missing, with why
        return f"missing: {type(exc).__name__}: {exc}"


def nvml_facts() -> dict[str, Any]:
    """The GPU's identity (UUID: tells two machines apart), clocks, power limit and clock-event reasons."""
    try:
        import pynvml as nv

        nv.nvmlInit()
        h = nv.nvmlDeviceGetHandleByIndex(0)
    except Exception as exc:  # noqa: BLE001
        return {"nvml": f"missing: {type(exc).__name__}: {exc}"}
    reasons = (getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
               or getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
    return {
        "uuid": _read(lambda: nv.nvmlDeviceGetUUID(h)),
        "driver": _read(nv.nvmlSystemGetDriverVersion),
        "sm_clock_mhz": _read(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        "sm_clock_max_mhz": _read(lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
        "mem_clock_mhz": _read(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
        "power_limit_w": _read(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000),
        "temperature_c": _read(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        "pstate": _read(lambda: nv.nvmlDeviceGetPerformanceState(h)),
        "clock_event_reasons": _read(lambda: hex(reasons(h))),
    }


def host_facts() -> dict[str, Any]:
    """What a launch-bound step depends on: the CPU, its load, and how fast it issues kernels."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    x = torch.zeros(1, device="cuda")
    for _ in range(200):
        x.add_(1.0)
    torch.cuda.synchronize()
    n = 20_000
    a = time.perf_counter()
    for _ in range(n):
        x.add_(1.0)
    b = time.perf_counter()
    torch.cuda.synchronize()
    c = time.perf_counter()
    t = time.perf_counter()
    sum(i * i for i in range(2_000_000))
    return {
        "cpu_model": model, "cpus_usable": len(os.sched_getaffinity(0)), "loadavg": list(os.getloadavg()),
        # The sandbox the machine runs in: gVisor reports kernel 4.4.0, Firecracker its own (KINDS.md).
        "kernel": platform.release(),
        # Host time to enqueue one tiny kernel, and until the GPU had run them all: enqueue ≥ drain
        # means the host, not the GPU, sets the pace of small kernels.
        "enqueue_us_per_kernel": round((b - a) / n * 1e6, 2), "drain_us_per_kernel": round((c - a) / n * 1e6, 2),
        "python_loop_ms": round((time.perf_counter() - t) * 1e3, 1),  # single-thread CPU speed
    }


def software_facts() -> dict[str, Any]:
    import torch

    from effbench.provenance import library_versions

    props = torch.cuda.get_device_properties(0)
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "device": props.name, "sms": props.multi_processor_count,
            **library_versions(["megatron-core", "transformer-engine", "liger-kernel", "triton"])}


def energy_crosscheck(seconds: float = 6.0) -> dict:
    """NVML's energy counter against integrated 20 Hz power polling over one window of matmuls."""
    import torch
    from effbench.measure.monitor import Monitor

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    with Monitor(device="cuda", interval_s=0.05, sync=torch.cuda.synchronize) as mon:
        mon.begin_window("matmul")
        t = time.monotonic()
        n = 0
        while time.monotonic() - t < seconds:
            for _ in range(20):
                a @ a
            torch.cuda.synchronize()
            n += 20
        w = mon.end_window("matmul")
    ts, ps = zip(*w.series["power_w"][0])
    polled = formulas.energy_from_power(ts, ps, w.t0, w.t1)
    counter = w.energy().value
    return {"check": "energy_counter_vs_power_poll", "window_s": round(w.seconds, 2), "matmuls": n,
            "tflops": round(n * 2 * 8192**3 / w.seconds / 1e12, 1), "counter_j": round(counter, 1),
            "polled_j": round(polled, 1), "ratio_polled_over_counter": round(polled / counter, 4),
            "aec_w": round(w.figures()["aec_w"].value, 1), "power_samples": len(ps)}


# ------------------------------------------------------------------------------------------
# 2. The 121.6 → 140 ms regression probe
# ------------------------------------------------------------------------------------------


def later_run_master_step(self: Any) -> None:
    """MasterWeightAdamW.step as the later (140 ms) run had it (commit 4b63b4c, reverted in
    e9b0a40): persistent fp32 gradient buffers filled by one multi-tensor copy, instead of one
    `.float()` cast per parameter."""
    import torch

    with torch.no_grad():  # as MasterWeightAdamW.step (decorated there)
        pairs = [(m, p.grad) for m, p in zip(self.master_params, self.model_params) if p.grad is not None]
        for m, p in zip(self.master_params, self.model_params):
            if p.grad is None:
                m.grad = None
            elif m.grad is None:
                m.grad = torch.empty_like(m)
        if pairs:
            torch._foreach_copy_([m.grad for m, _ in pairs], [g for _, g in pairs])
        if self.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.master_params, self.clip_grad)
        self.optimizer.step()
        torch._foreach_copy_(self.model_params, self.master_params)


def regression_probe(settings: dict[str, Any], data: Path, args: argparse.Namespace, fpt: float,
                     deadline: float, emit: Callable[[str, dict[str, Any]], None]) -> None:
    """The stage's own step (set_up + train_step: its sampler, host copies and loop) with and
    without each difference docs/gpu-checks.md lists between the 121.6 ms and the 140 ms runs
    that can be switched in one process; the machine itself is covered by the facts above."""
    import torch

    from effbench.measure.monitor import Monitor
    from effbench.pretrain.mixed_precision import MasterWeightAdamW
    from effbench.pretrain.train import set_up, train_step

    job = set_up(settings, data, Path("/tmp/effbench-probe-resume"))
    counter = itertools.count()
    tokens = job.tokens_per_step

    def timed(name: str, warmup: int, what: str, extra: Callable[[], dict[str, Any]] | None = None) -> None:
        if time.monotonic() > deadline:
            emit("probe", {"variant": name, "status": "skipped", "why": "--budget-s spent"})
            return
        row: dict[str, Any] = {"variant": name, "what": what}
        try:
            t = pl.time_steps(lambda i: train_step(job, next(counter)), warmup, args.lever_steps)
            row.update(pl.summarise(t, tokens, fpt, args.peak_tflops * 1e12), status="ok")
            row.update(extra() if extra else {})
        except Exception as exc:  # noqa: BLE001 - fail soft, as the levers do
            row.update(status="error", error=f"{type(exc).__name__}: {str(exc)[:600]}")
        emit("probe", row)

    timed("stage_step", args.lever_warmup, "the stage's train_step as it is now (per-tensor gradient casts)")
    with Monitor(device="cuda", interval_s=0.05, sync=torch.cuda.synchronize) as mon:
        mon.begin_window("train")  # both earlier runs measured under this 20 Hz sampler thread

        def figures() -> dict[str, Any]:
            f = mon.end_window("train").figures()
            return {"pcu_frac": f["pcu_frac"].value, "aec_w": f["aec_w"].value}

        timed("stage_step+monitor_20hz", 1, "the same under the stage's 20 Hz NVML/psutil sampler "
              "(PCU and AEC comparable with the runs' 0.94 / 640 W and 0.82 / 561 W)", figures)
    job.opt.__class__ = type("LaterRunMasterWeightAdamW", (MasterWeightAdamW,), {"step": later_run_master_step})
    timed("stage_step+multi_tensor_grad_copy", 3, "the later run's optimizer step (multi-tensor copy into "
          "persistent fp32 gradient buffers)")
    job.opt.__class__ = MasterWeightAdamW
    for m in job.opt.master_params:
        m.grad = None
    timed("stage_step_again", 3, "as the first row: drift over the probe")
    del job
    pl.free_cuda()


# ------------------------------------------------------------------------------------------
# 3. Levers, table, JSON
# ------------------------------------------------------------------------------------------


def lever_rows(settings: dict[str, Any], args: argparse.Namespace, fpt: float, deadline: float,
               emit: Callable[[str, dict[str, Any]], None]) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    mb, seq = args.micro_batch, settings["model"]["seq_length"]
    batches = [(torch.randint(0, VOCAB, (mb, seq), device="cuda", generator=g),
                torch.randint(0, VOCAB, (mb, seq), device="cuda", generator=g)) for _ in range(4)]
    rows: list[dict[str, Any]] = []
    base: dict[str, Any] | None = None
    for name in args.levers:
        left = deadline - time.monotonic()
        need = args.compile_reserve_s if "compile" in name else 0.0
        if left <= need:
            row = {"lever": name, "status": "skipped", "why": f"--budget-s: {max(left, 0):.0f} s left, needs > {need:.0f}"}
        else:
            row = pl.run_lever(name, settings, VOCAB, batches, warmup=args.lever_warmup, steps=args.lever_steps,
                               flops_per_token=fpt, peak_flops=args.peak_tflops * 1e12, chunk_rows=args.ce_chunk_rows)
        row["repeat"] = sum(r["lever"] == name for r in rows) + 1
        if row["status"] == "ok":
            if base is None and name == "baseline":
                base = row
            if base is not None:
                row.update(pl.ratio_to(row, base))
        rows.append(row)
        emit("levers", row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'lever':34} {'ms/step [95% CI]':>24} {'x base':>7} {'MFU':>6} {'tok/s':>7} {'max GB':>7} {'issue ms':>8} {'loss0-base':>10}"
    print(head, flush=True)
    for r in rows:
        name = r["lever"] + (f" #{r['repeat']}" if r.get("repeat", 1) > 1 else "")
        if r["status"] != "ok":
            print(f"{name:34} {r['status']}: {r.get('error') or r.get('why')}", flush=True)
            continue
        lo, hi = r["step_ms_ci95"]
        print(f"{name:34} {r['step_ms']:>8.1f} [{lo:>6.1f}, {hi:>6.1f}] {r.get('ratio_vs_baseline', float('nan')):>7.3f} "
              f"{r['mfu']:>6.1%} {r['tokens_per_s']:>7} {r.get('max_alloc_gb', float('nan')):>7.1f} {r['host_issue_ms']:>8.1f} "
              f"{r.get('first_loss_minus_baseline', float('nan')):>10.4f}", flush=True)


def stage_cells(paper: dict[str, Any], data: Path, args: argparse.Namespace) -> None:
    """Whole stage cells through run_cell (records under --out), as the first GPU checks ran them."""
    import torch
    from effbench.pretrain.train import train_cell

    for variant in args.variants:
        s = cfg.pretrain_settings(paper, "0.5b", variant)
        s = {**s, "device": "cuda", "measure": {**s["measure"], "interval_s": 0.05}}
        name = f"0.5b-{variant}"
        out = args.out / name
        cell = Cell.from_settings("pretrain", s, record_path=out / "record.parquet",
                                  samples_path=out / "samples.parquet", config_hash="gpu-check",
                                  libraries=["torch", "megatron-core"])
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        run_cell(cell, lambda mon: train_cell(s, data, Path(f"/tmp/{name}.pt"), out / "resume", mon),
                 sync=torch.cuda.synchronize)
        r = read_records([out / "record.parquet"]).to_pylist()[0]
        print(json.dumps({
            "cell": name, "device": r["device_name"], "driver": r["driver_version"],
            "ms_per_step": round(r["al_s_per_iter"] * 1000, 1), "tokens_per_s": round(r["tokens_per_s"]),
            "mfu": round(r["mfu_frac"], 4) if r["mfu_frac"] else r["mfu_frac__missing"],
            "mfu_source": r["mfu_frac__source"],
            "torch_peak_alloc_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
            "amu_gb": round(r["amu_gb"], 2), "peak_mem_gb_nvml": round(r["peak_mem_gb"], 2),
            "pcu": round(r["pcu_frac"], 3), "aec_w": round(r["aec_w"], 1) if r["aec_w"] else r["aec_w__missing"],
            "energy_j": r["energy_j"], "energy_source": r["energy_j__source"],
            "energy_j_per_token": r["energy_j_per_token"], "window_s": round(r["seconds"], 2),
            "params_total": r["params_total"],
            "flops_per_token": r["flops_per_token"], "wall_s": round(time.time() - t0, 1),
            "torch": torch.__version__,
        }), flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="folder for the JSON copy and the stage cells' records ($OUT)")
    ap.add_argument("--levers", nargs="+", default=pl.DEFAULT_LEVERS,
                    help="'baseline' or atoms joined by '+' (" + ", ".join(pl.ATOMS) + "); 'none' skips")
    ap.add_argument("--no-probe", dest="probe", action="store_false", help="skip the regression probe")
    ap.add_argument("--lever-warmup", type=int, default=10)
    ap.add_argument("--lever-steps", type=int, default=20)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100/H200 SXM: 989)")
    ap.add_argument("--ce-chunk-rows", type=int, default=2048, help="tokens per chunk of the fused loss")
    ap.add_argument("--budget-s", type=float, default=400.0, help="after this many seconds, skip what is left")
    ap.add_argument("--compile-reserve-s", type=float, default=100.0, help="a compile lever starts only with this much left")
    ap.add_argument("--crosscheck-s", type=float, default=4.0)
    ap.add_argument("--variants", nargs="*", default=[], help="also run these 0.5b stage cells (gqa mqa mla moe)")
    ap.add_argument("--steps", type=int, default=14, help="stage cells: steps")
    ap.add_argument("--warmup", type=int, default=4, help="stage cells: steps left out of the window")
    args = ap.parse_args()
    args.levers = [] if args.levers == ["none"] else args.levers
    for name in set(args.levers):
        pl.Lever.parse(name)  # a typo fails here, before the GPU is used
    if args.variants and args.out is None:
        ap.error("--variants needs --out")
    return args


def main() -> None:
    args = parse_args()
    start = time.monotonic()
    deadline = start + args.budget_s
    setup_logging()
    import torch

    paper = paper_config(args.micro_batch, args.steps, args.warmup)
    settings = cfg.pretrain_settings(paper, "0.5b", "gqa")
    fpt = formulas_flops_per_token(settings)
    result: dict[str, Any] = {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "shape": {"model": "0.5b/gqa (config/paper.yaml)", "seq": settings["model"]["seq_length"],
                  "micro_batch": args.micro_batch, "precision": "bf16 weights, fp32 masters, clip 1.0",
                  "flops_per_token": fpt, "peak_flops": args.peak_tflops * 1e12, "peak_source": PEAK_SOURCE},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "unmeasured": UNMEASURED, "probe": [], "levers": [],
    }

    def emit(section: str, row: dict[str, Any]) -> None:
        if section in ("probe", "levers"):
            result[section].append(row)
        else:
            result[section] = row
        print(json.dumps({section: row}), flush=True)
        write_json(result, args.out)

    data = Path("/tmp/effbench-gpu-data")
    random_corpus(data, VOCAB, 4_000_000, 40_000)
    def soft(section: str, fn: Callable[[], Any]) -> None:
        """Every part fails soft: its error is its entry, and the run goes on."""
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001
            out = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:600]}"}
        if out is not None:
            emit(section, out)

    soft("software", software_facts)
    soft("gpu_idle", nvml_facts)
    soft("host", host_facts)
    soft("crosscheck", lambda: energy_crosscheck(args.crosscheck_s))
    soft("gpu_loaded", nvml_facts)  # clocks right after the matmul window
    if args.probe:
        soft("probe_error", lambda: regression_probe(settings, data, args, fpt, deadline, emit))
        pl.free_cuda()  # what a failed probe left behind
    rows = lever_rows(settings, args, fpt, deadline, emit) if args.levers else []
    result["wall_s"] = round(time.monotonic() - start, 1)
    write_json(result, args.out)
    print_table([{"lever": f"probe:{r['variant']}", **r} for r in result["probe"]] + rows)
    if args.variants:
        stage_cells(paper, data, args)


def formulas_flops_per_token(settings: dict[str, Any]) -> float:
    """The stage's analytic FLOPs per token (6·(active non-embedding + output projection) + 12·L·H·S)."""
    from effbench.plan.params import flops_per_token

    return flops_per_token(settings["model"], settings["model"]["seq_length"], vocab_size=VOCAB)


def write_json(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=1)
    for path in (RESULTS, out / RESULTS.name if out else None):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


if __name__ == "__main__":
    main()
