"""Materialise one model × precision (bf16/fp16 cast or int4 via llm-compressor); write its record.

Called by workflow/rules/quantize.smk in the quantization environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LIBRARIES = ["torch", "llmcompressor", "compressed-tensors", "transformers", "datasets", "nvidia-ml-py", "psutil",
             "pyarrow"]


def main() -> None:
    from effbench.quantize.run import quantize_cell, source_path
    from effbench.runner import Cell, run_cell, start_job
    from effbench.torch_device import free_cuda

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="the cell's resolved settings (JSON)")
    p.add_argument("--config-hash", required=True)
    p.add_argument("--source-dir", type=Path, help="the model directory (pipeline exports, local paths)")
    p.add_argument("--data-dir", type=Path, help="the pipeline corpus (calibration for gptq/awq)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--record", type=Path, required=True)
    p.add_argument("--samples", type=Path, required=True)
    a = p.parse_args()
    start_job()
    s = json.loads(a.settings)
    src = source_path(s["source"], a.source_dir)
    cell = Cell.from_settings("quantize", s, record_path=a.record, samples_path=a.samples,
                              config_hash=a.config_hash, libraries=LIBRARIES)
    run_cell(cell, lambda mon: quantize_cell(s, src, a.data_dir, a.out_dir, mon), on_oom=free_cuda)


if __name__ == "__main__":
    main()
