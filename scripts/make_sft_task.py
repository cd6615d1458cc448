"""Prepare one fine-tuning task's folder for LlamaFactory (dataset_info.json, task.json, data).

Called by workflow/rules/finetune.smk (rule finetune_data) in the fine-tuning environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effbench.finetune.tasks import prepare_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--settings", required=True, help="the task's settings (JSON)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    a = p.parse_args()
    meta = prepare_task(a.name, json.loads(a.settings), a.out_dir, a.seed)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
