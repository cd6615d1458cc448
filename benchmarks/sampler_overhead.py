"""Overhead of the measurement core's sampler on a fixed workload, measured side by side.

    .venvs/driver/bin/python benchmarks/sampler_overhead.py [--interval 0.1] [--repeats 7]

Alternates runs of the same workload without and with a Monitor sampling in the background
(interleaved, so drift on a shared machine hits both arms alike) and prints the ratio of
median times. Goal: under 1 % at 10 Hz. The workload mixes numpy matmuls (which release the
GIL, like a framework's kernels) with a pure-Python loop (which competes with the sampler
thread for the GIL, like a training loop's Python side).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from effbench.measure.monitor import Monitor  # noqa: E402


def workload(a: np.ndarray, steps: int) -> float:
    acc = 0.0
    for i in range(steps):
        acc += float((a @ a).sum()) * 1e-12
        for j in range(20_000):  # the Python side of a step
            acc += j & 1
    return acc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    a = np.random.default_rng(0).standard_normal((384, 384))
    workload(a, 3)  # warm-up
    bare, measured = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        workload(a, args.steps)
        bare.append(time.perf_counter() - t)
        with Monitor(device=args.device, interval_s=args.interval) as mon:
            t = time.perf_counter()
            workload(a, args.steps)
            measured.append(time.perf_counter() - t)
            n = len(mon.samples_rows())
    mb, mm = statistics.median(bare), statistics.median(measured)
    print(f"backend: {mon.backend.name}, interval {args.interval}s, {args.repeats} interleaved repeats, "
          f"{n} sample rows in the last run")
    print(f"median without sampler: {mb:.4f}s  with sampler: {mm:.4f}s")
    print(f"overhead ratio (with / without): {mm / mb:.4f}  ({(mm / mb - 1) * 100:+.2f} %)")


if __name__ == "__main__":
    main()
