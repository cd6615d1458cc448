"""Materialise one model × precision (bf16/fp16 cast or int4 via llm-compressor); write its record.

Called by workflow/rules/quantize.smk in the quantization environment.
"""

from __future__ import annotations

from pathlib import Path

from effbench.lifetime import exit_without_teardown

LIBRARIES = ["torch", "llmcompressor", "compressed-tensors", "transformers", "datasets", "nvidia-ml-py", "psutil",
             "pyarrow"]


def main() -> None:
    from effbench.quantize.run import quantize_cell, source_path
    from effbench.runner import cell_job, run_cell
    from effbench.torch_device import free_cuda

    def args(p):  # type: ignore[no-untyped-def]
        p.add_argument("--source-dir", type=Path, help="the model directory (pipeline exports, local paths)")
        p.add_argument("--data-dir", type=Path, help="the pipeline corpus (calibration for gptq/awq)")
        p.add_argument("--out-dir", type=Path, required=True)

    a, cell = cell_job("quantize", __doc__, LIBRARIES, args)
    s = cell.settings
    src = source_path(s["source"], a.source_dir)
    run_cell(cell, lambda mon: quantize_cell(s, src, a.data_dir, a.out_dir, mon), on_oom=free_cuda)


if __name__ == "__main__":
    main()
    exit_without_teardown()  # outputs are written; skip 2-3 s of interpreter teardown
