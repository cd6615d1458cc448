"""The offline multiple-choice tasks (one per kind of item) as lm-evaluation-harness task files.

Pure Python (no lm-eval import): the driver environment makes them. Each task reads a local
jsonl written by :func:`effbench.data.instructions.make_multiple_choice_eval`, filtered to
one kind, so the per-task table separates closed-book facts, facts given in context and
arithmetic. Chance is 1/4 on every task.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..config import LOCAL_TASKS
from ..data.instructions import make_multiple_choice_eval

CHANCE = 0.25


def make_local_tasks(out_dir: Path, items_per_task: int, seed: int) -> dict[str, str]:
    """Write ``<task>.jsonl`` and ``<task>.yaml`` per local task; return {task: yaml path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Over-generate, then keep the first ``items_per_task`` items of each kind.
    pool = make_multiple_choice_eval(out_dir, n=items_per_task * 5, seed=seed, file_name="_pool.jsonl")
    rows = [json.loads(line) for line in pool.read_text().splitlines() if line]
    pool.unlink()
    written = {}
    for task, kind in LOCAL_TASKS.items():
        items = [r for r in rows if r["kind"] == kind][:items_per_task]
        if len(items) < items_per_task:
            raise ValueError(f"only {len(items)} {kind} items could be made for {task}")
        data = out_dir / f"{task}.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))
        spec = {
            "task": task,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "{{question}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "gold",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "kind": kind, "chance": CHANCE},
        }
        path = out_dir / f"{task}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        written[task] = str(path)
    return written
