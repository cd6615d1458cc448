"""Fine-tune one cell (model × method × task) with LlamaFactory and write its record.

Called by workflow/rules/finetune.smk in the fine-tuning environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effbench.finetune.train import finetune_cell
from effbench.runner import Cell, run_cell, start_job
from effbench.torch_device import cuda_sync_or_none, free_cuda

LIBRARIES = ["torch", "llamafactory", "transformers", "peft", "trl", "accelerate", "datasets", "torchaudio",
             "numpy", "nvidia-ml-py", "psutil", "pyarrow"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="the cell's resolved settings (JSON)")
    p.add_argument("--config-hash", required=True)
    p.add_argument("--model-path", required=True, help="HF id, local directory, or the pipeline's own export")
    p.add_argument("--data-dir", type=Path, required=True, help="the task's folder (dataset_info.json, task.json)")
    p.add_argument("--output-dir", type=Path, required=True, help="where LlamaFactory saves the adapter/model")
    p.add_argument("--record", type=Path, required=True)
    p.add_argument("--samples", type=Path, required=True)
    a = p.parse_args()
    start_job()
    settings = json.loads(a.settings)
    cell = Cell.from_settings("finetune", settings, record_path=a.record, samples_path=a.samples,
                              config_hash=a.config_hash, libraries=LIBRARIES)
    run_cell(cell, lambda mon: finetune_cell(settings, model_path=a.model_path, data_dir=a.data_dir,
                                             output_dir=a.output_dir, mon=mon),
             sync=cuda_sync_or_none(settings), on_oom=free_cuda)


if __name__ == "__main__":
    main()
