"""GPU check of the pretraining stage: the real stage code (run_cell + train_cell) at the
paper's Qwen2.5-0.5B shape, bf16, on one GPU, for two attention variants.

    python benchmarks/gpu_pretrain_check.py --out $OUT [--steps 14] [--variants gqa mqa]

Data are random tokens over Qwen2.5's vocabulary (151936), so the timing matches the
shape of ../shared/reference/toolchain.md's table (sequence 2048, micro-batch 4); the
perplexity of such a run is meaningless and is not reported. Writes each cell's record and
samples under --out and prints one JSON line per cell, plus a cross-check of the energy
counter against integrated polled power over the same window.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from effbench import config as cfg  # noqa: E402
from effbench.data.tokens import BinWriter, write_meta  # noqa: E402
from effbench.measure import formulas  # noqa: E402
from effbench.record import read_records  # noqa: E402
from effbench.runner import Cell, run_cell, setup_logging  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--variants", nargs="+", default=["gqa", "mqa"])
    args = ap.parse_args()
    setup_logging()
    import torch
    from effbench.pretrain.train import train_cell

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    paper["device"] = "cuda"
    paper["pretrain"]["parallel"] = {"nodes": 1, "gpus_per_node": 1}  # one GPU here
    paper["measure"]["interval_s"] = 0.05
    paper["pretrain"]["training"].update(
        micro_batch_size=4, global_batch_size=4, train_steps=args.steps, warmup_steps=2, eval_batches=2,
        checkpoint_interval=10_000, warmup_measure_steps=args.warmup)
    data = Path("/tmp/effbench-gpu-data")
    random_corpus(data, 151936, 4_000_000, 40_000)
    print(json.dumps(energy_crosscheck()), flush=True)
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


if __name__ == "__main__":
    main()
