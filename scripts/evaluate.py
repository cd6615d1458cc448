"""Score one model × precision with lm-evaluation-harness; write scores.json (per task, the mean, and
each task's per-item results under ``items`` for the paired comparison of precisions).

Called by workflow/rules/inference.smk in the inference environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effbench.lifetime import exit_without_teardown


def main() -> None:
    from effbench.atomic import write_text
    from effbench.evaluate.run import evaluate_cell
    from effbench.runner import start_job
    from effbench.torch_device import pick_device

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="the cell's resolved settings (JSON)")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--include-path", type=Path, help="folder of local task yaml files")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    start_job()
    s = json.loads(a.settings)
    scores = evaluate_cell(s, a.model_dir, a.include_path, pick_device(s["device"]))
    scores["settings"] = s
    write_text(a.out, json.dumps(scores, indent=2, sort_keys=True) + "\n")
    for task, v in scores["tasks"].items():
        print(f"{task}: {v['metric']} {v['value']:.4f} ± {v['stderr']}")
    print(f"mean accuracy {scores['accuracy']:.4f}")


if __name__ == "__main__":
    main()
    exit_without_teardown()  # outputs are written; skip 2-3 s of interpreter teardown
