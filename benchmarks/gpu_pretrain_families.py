"""GPU check of the pretraining rows beyond the dense GPT (NSA, Pythia / GPT-NeoX, Mamba-2, RWKV) at the
paper config's 0.5B shapes (config/paper.yaml: sequence 2048, micro-batch 2, bf16 weights over
fp32 masters, clipping 1.0), with megatron's GQA at the same shape as the reference row.

Per family, built and stepped by the stage's own code (`families.build_model`,
`train.make_optimizer`, `train._forward_loss`): warm-up steps, then timed steps; the step time's
median with a distribution-free 95 % interval, MFU against a stated peak (989 TFLOP/s, H100/H200
SXM bf16 dense) from the stage's analytic FLOPs per token, torch's max allocated memory against
the memory planner's `counted` bytes (its peak less the runtime allowance), and the kernel path
that ran. Data are random tokens over Qwen2.5's vocabulary: the timing is the shape's, the
losses mean nothing.

    python benchmarks/gpu_pretrain_families.py --out $OUT [--families gqa nsa pythia mamba rwkv]

A family's error is its row; the others still run. Rows are skipped (and say so) once
--budget-s is spent. The JSON is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from effbench import config as cfg  # noqa: E402
from effbench.plan.memory import GB, estimate  # noqa: E402
from effbench.plan.params import flops_per_token  # noqa: E402

VOCAB = 151665  # paper.yaml's data.pretrain.shards.vocab_size
PEAK = 989e12  # stated: H100/H200 SXM bf16 dense datasheet


def order_interval(xs: list[float]) -> tuple[float, float]:
    """Distribution-free 95 % interval of the median from order statistics (n ≥ 6)."""
    s, n = sorted(xs), len(xs)
    k = max(0, int(n / 2 - 1.96 * n ** 0.5 / 2))
    return s[k], s[min(n - 1, n - 1 - k)]


def measure(settings: dict[str, Any], warmup: int, steps: int) -> dict[str, Any]:
    import torch

    from effbench.pretrain import families
    from effbench.pretrain.parallel import init_single_process
    from effbench.pretrain.train import _forward_loss, make_optimizer

    init_single_process()
    m, t = settings["model"], settings["training"]
    torch.manual_seed(0)
    model = families.build_model({**m, "params_dtype": "bfloat16"}, VOCAB, "cuda")
    opt = make_optimizer(model, t, "cuda")
    mb, seq = int(t["micro_batch_size"]), int(m["seq_length"])
    ids = torch.randint(0, VOCAB, (mb, seq), device="cuda")
    labels = torch.randint(0, VOCAB, (mb, seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = _forward_loss(model, ids, labels)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    lo, hi = order_interval(times)
    fpt = flops_per_token(m, seq, vocab_size=VOCAB)
    planned = estimate({**settings, "device": "cuda"}, VOCAB)
    measured = torch.cuda.max_memory_allocated()
    return {
        "family": families.family(m), "kernel_path": families.kernel_path(m, "cuda"),
        "step_s_median": med, "step_s_ci95": [lo, hi], "steps": steps,
        "mfu": fpt * mb * seq / med / PEAK, "mfu_ci95": [fpt * mb * seq / hi / PEAK, fpt * mb * seq / lo / PEAK],
        "max_allocated_gb": measured / GB, "planned_counted_gb": planned.counted / GB,
        "measured_over_planned": measured / planned.counted, "loss_first": float(loss),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--families", nargs="+", default=["gqa", "nsa", "pythia", "mamba", "rwkv"])
    p.add_argument("--size", default="0.5b")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=420)
    a = p.parse_args()
    paper = cfg.with_defaults(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))  # no jsonschema here
    paper["pretrain"]["parallel"].update(gpus_per_node=1, optimizer_sharding="none", expert_parallel=1)  # one GPU
    cells = {t: cfg.pretrain_settings(paper, a.size, t) for t in a.families}
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / "gpu_pretrain_families.json"
    rows: dict[str, Any] = {}
    start = time.monotonic()
    for name in a.families:
        if time.monotonic() - start > a.budget_s:
            rows[name] = {"skipped": f"budget of {a.budget_s} s spent"}
        else:
            try:
                rows[name] = measure(cells[name], a.warmup, a.steps)
            except Exception as e:  # a family's error is its row
                rows[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        print(json.dumps({name: rows[name]}), flush=True)
        out.write_text(json.dumps({"size": a.size, "peak_flops": PEAK, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
