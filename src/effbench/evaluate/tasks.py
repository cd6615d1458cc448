"""The offline multiple-choice tasks (one per kind of item) and their controls (question-blind,
swapped subject), as lm-evaluation-harness task files.

Pure Python (no lm-eval import): the driver environment makes them. Each task reads a local
jsonl written from :func:`effbench.data.instructions.make_multiple_choice_items`, so the
per-task table separates closed-book facts, facts given in context, arithmetic and the
relation task (which category of word answers the question). Chance is 1/4 on every task:
four choices, the gold position cycles 0-3 (exactly uniform), and the choices of an item
are words of one token each (numbers with as many digits), so lm-eval's ``acc`` (summed
log-likelihood) does not favour short choices.

Two controls, each a twin task on the same items scored in the same lm-eval run
(:mod:`effbench.evaluate.run` adds them); a task measures the model only when its score is above
chance and above both:

* question-blind, ``T_blind``: the prompt is only "Answer:" (question and passage removed). It
  tells what a model gets from preferring some answers regardless of the question;
* swapped subject, ``T_swapped``: the question keeps its form (and the passage, the choices) but
  asks about another subject whose answer is none of the choices (arithmetic: another problem
  of the same operation), so the fact is gone
  (:func:`effbench.data.instructions.make_multiple_choice_items`). It tells what a model gets from
  the question's form, the category of word it asks for, or a passage's words without reading
  whom it is about.

Tied answer scores: lm-eval's ``acc`` takes the argmax, which on a tie picks the first
choice (position 0). :mod:`effbench.evaluate.run` rescores each item from the logged
log-likelihoods instead: an item whose best score is shared by ``k`` choices counts
``1/k`` if gold is among them (the expected accuracy of a random tie-break), else 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..config import LOCAL_TASKS
from ..data.instructions import N_CHOICES, make_multiple_choice_items

CHANCE = 1 / N_CHOICES
CONTROL_SUFFIX = "_blind"
#: The question-blind control's prompt: the corpus' answer cue with nothing before it.
CONTROL_PROMPT = "Answer:"
SWAPPED_SUFFIX = "_swapped"
#: The swapped-subject control's prompt: the item's ``question_swapped``.
SWAPPED_PROMPT = "{{question_swapped}}"


def control_task(task: str) -> str:
    """The question-blind twin of ``task``."""
    return task + CONTROL_SUFFIX


def swapped_task(task: str) -> str:
    """The swapped-subject twin of ``task``."""
    return task + SWAPPED_SUFFIX


def _spec(task: str, data: Path, kind: str, doc_to_text: str, control_of: str | None) -> dict:
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": doc_to_text,
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "gold",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 2.0, "kind": kind, "chance": CHANCE, "control_of": control_of},
    }


def make_local_tasks(out_dir: Path, items_per_task: int, seed: int) -> dict[str, str]:
    """Write ``<task>.jsonl``, ``<task>.yaml``, ``<task>_blind.yaml`` and ``<task>_swapped.yaml`` per
    local task; return {task: yaml path} for tasks and controls."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for task, kind in LOCAL_TASKS.items():
        items = make_multiple_choice_items(kind, items_per_task, seed=seed)
        data = out_dir / f"{task}.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))
        for name, text, of in ((task, "{{question}}", None), (control_task(task), CONTROL_PROMPT, task),
                               (swapped_task(task), SWAPPED_PROMPT, task)):
            path = out_dir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(_spec(name, data, kind, text, of), sort_keys=False))
            written[name] = str(path)
    return written
