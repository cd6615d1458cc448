"""Pretrain one cell (size × technique) with megatron-core and write its record.

Called by workflow/rules/pretrain.smk in the pretraining environment.
"""

from __future__ import annotations

from pathlib import Path

from effbench.lifetime import exit_without_teardown
from effbench.pretrain.train import train_cell
from effbench.runner import cell_job, run_cell
from effbench.torch_device import cuda_sync_or_none, free_cuda

LIBRARIES = ["torch", "megatron-core", "transformers", "native-sparse-attention-pytorch", "numpy", "nvidia-ml-py", "psutil",
             "pyarrow", "transformer-engine"]


def main() -> None:
    def args(p):  # type: ignore[no-untyped-def]
        p.add_argument("--data-dir", type=Path, required=True)
        p.add_argument("--checkpoint", type=Path, required=True)
        p.add_argument("--resume-dir", type=Path, required=True)

    a, cell = cell_job("pretrain", __doc__, LIBRARIES, args)
    s = cell.settings
    run_cell(cell, lambda mon: train_cell(s, a.data_dir, a.checkpoint, a.resume_dir, mon),
             sync=cuda_sync_or_none(s), on_oom=free_cuda)


if __name__ == "__main__":
    main()
    exit_without_teardown()  # outputs are written; skip 2-3 s of interpreter teardown
