"""Fine-tune one cell (model × method × task) with LlamaFactory and write its record.

Called by workflow/rules/finetune.smk in the fine-tuning environment.
"""

from __future__ import annotations

from pathlib import Path

from effbench.finetune.train import finetune_cell
from effbench.lifetime import exit_without_teardown
from effbench.runner import cell_job, run_cell
from effbench.torch_device import cuda_sync_or_none, free_cuda

LIBRARIES = ["torch", "llamafactory", "transformers", "peft", "trl", "accelerate", "datasets", "torchaudio",
             "numpy", "nvidia-ml-py", "psutil", "pyarrow"]


def main() -> None:
    def args(p):  # type: ignore[no-untyped-def]
        p.add_argument("--model-path", required=True, help="HF id, local directory, or the pipeline's own export")
        p.add_argument("--data-dir", type=Path, required=True, help="the task's folder (dataset_info.json, task.json)")
        p.add_argument("--output-dir", type=Path, required=True, help="where LlamaFactory saves the adapter/model")

    a, cell = cell_job("finetune", __doc__, LIBRARIES, args)
    s = cell.settings
    run_cell(cell, lambda mon: finetune_cell(s, model_path=a.model_path, data_dir=a.data_dir,
                                             output_dir=a.output_dir, mon=mon),
             sync=cuda_sync_or_none(s), on_oom=free_cuda)


if __name__ == "__main__":
    main()
    exit_without_teardown()  # outputs are written; skip 2-3 s of interpreter teardown
