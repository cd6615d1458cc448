"""Pretrain one cell (size × technique) with megatron-core and write its record.

Called by workflow/rules/pretrain.smk in the pretraining environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effbench.pretrain.train import train_cell
from effbench.torch_device import cuda_sync_or_none, free_cuda
from effbench.runner import Cell, run_cell, start_job

LIBRARIES = ["torch", "megatron-core", "numpy", "nvidia-ml-py", "psutil", "pyarrow", "transformer-engine"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="the cell's resolved settings (JSON)")
    p.add_argument("--config-hash", required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--record", type=Path, required=True)
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--resume-dir", type=Path, required=True)
    a = p.parse_args()
    start_job()
    settings = json.loads(a.settings)
    cell = Cell.from_settings("pretrain", settings, record_path=a.record, samples_path=a.samples,
                              config_hash=a.config_hash, libraries=LIBRARIES)
    run_cell(cell, lambda mon: train_cell(settings, a.data_dir, a.checkpoint, a.resume_dir, mon),
             sync=cuda_sync_or_none(settings), on_oom=free_cuda)


if __name__ == "__main__":
    main()
