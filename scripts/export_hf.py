"""Export a trained pretraining checkpoint to a Hugging Face checkpoint (export_families.py: which class).

Called by workflow/rules/pretrain.smk in the pretraining environment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from effbench.atomic import atomic_path
from effbench.lifetime import exit_without_teardown
from effbench.pretrain.compat_cpu import apply_cpu_compat
from effbench.pretrain.export_hf import export_to_hf
from effbench.pretrain.families import build_model
from effbench.pretrain.parallel import init_single_process
from effbench.runner import start_job


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--tokenizer-dir", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    a = p.parse_args()
    start_job()
    apply_cpu_compat()  # a no-op where CUDA exists; conversion itself runs on the CPU
    init_single_process()
    state = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    model = build_model(state["model_settings"], state["vocab_size"], "cpu")
    model.load_state_dict(state["model"])
    with atomic_path(a.out_dir) as tmp:
        export_to_hf(model, state["model_settings"], state["vocab_size"], tmp, tokenizer_dir=a.tokenizer_dir)


if __name__ == "__main__":
    main()
    exit_without_teardown()  # outputs are written; skip 2-3 s of interpreter teardown
