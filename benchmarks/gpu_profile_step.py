"""Profile pretraining steps on a GPU: where the time of one step goes (top CUDA kernels,
CPU-side time, GPU idle), using the stage's own model builder, optimizer and loss.

    python benchmarks/gpu_profile_step.py --variant gqa [--steps 20] [--no-clip] [--bf16-params]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="gqa")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--bf16-params", action="store_true")
    ap.add_argument("--no-clip", action="store_true")
    ap.add_argument("--no-autocast", action="store_true")
    a = ap.parse_args()
    import torch
    from effbench import config as cfg
    from effbench.pretrain.model import build_gpt_model
    from effbench.pretrain.parallel import init_single_process
    from effbench.pretrain.train import _forward_loss, make_optimizer

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    s = cfg.pretrain_settings(paper, "0.5b", a.variant)
    m, t = s["model"], s["training"]
    if a.bf16_params:
        m["params_dtype"] = "bfloat16"
    init_single_process()
    model = build_gpt_model(m, 151936, "cuda")
    opt = make_optimizer(model, t, "cuda")
    ids = torch.randint(0, 151936, (4, 2048), device="cuda")
    labels = torch.randint(0, 151936, (4, 2048), device="cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if a.no_autocast:
            loss = _forward_loss(model, ids, labels)
        else:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = _forward_loss(model, ids, labels)
        loss.backward()
        if not a.no_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / a.steps * 1000
    print(f"variant={a.variant} bf16_params={a.bf16_params} clip={not a.no_clip} autocast={not a.no_autocast} "
          f"ms/step={ms:.1f} peak_alloc_gb={torch.cuda.max_memory_allocated() / 1e9:.1f}", flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
