"""Write the offline multiple-choice tasks for lm-evaluation-harness (driver environment)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effbench.evaluate.tasks import make_local_tasks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items-per-task", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    a = p.parse_args()
    print(json.dumps(make_local_tasks(a.out_dir, a.items_per_task, a.seed), indent=2))


if __name__ == "__main__":
    main()
