"""Per-item scoring of multiple-choice tasks from lm-evaluation-harness' logged samples.

Pure Python (no lm-eval import; unit-tested in the driver environment).

Ties: lm-eval's ``acc`` is ``argmax(log-likelihoods) == gold`` and ``argmax`` returns the
first of tied choices, so ties (bf16 logits tie exactly on a few items) are all resolved
toward position 0. Here an item whose best log-likelihood is shared by ``k`` choices
scores ``1/k`` if gold is one of them, else 0: the expected accuracy of breaking the tie
uniformly at random, independent of where gold sits.

Per-item results are kept (``scores.json``'s ``items``): the tie-aware score of each item of the
pipeline's own tasks, the sample's own metric for lm-eval's tasks (:func:`sample_values`), so two
precisions can be compared on the same items (:mod:`effbench.measure.paired`).

A task is *measurable* on a model when its score is above chance by more than
``Z`` standard errors and above its question-blind control by more than ``Z`` standard
errors of the paired per-item difference (the control scores the same items).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

Z = 3.0


def _loglik(resp: Any) -> float:
    """One choice's log-likelihood from a logged response: ``(ll, is_greedy)`` or ``ll``."""
    while isinstance(resp, (list, tuple)):
        resp = resp[0]
    return float(resp)


def item_score(logliks: Sequence[float], gold: int) -> tuple[float, int]:
    """(score, k): ``1/k`` if gold is among the ``k`` choices tied at the maximum, else 0."""
    best = max(logliks)
    tied = [i for i, x in enumerate(logliks) if x == best]
    return (1.0 / len(tied) if gold in tied else 0.0), len(tied)


def mean_stderr(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n), as lm-eval's)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


def item_scores(samples: Iterable[dict[str, Any]]) -> dict[int, tuple[float, int]]:
    """{doc_id: (score, k)} from lm-eval's logged samples of a multiple-choice task."""
    out = {}
    for s in samples:
        lls = [_loglik(r) for r in s["filtered_resps"]]
        out[int(s["doc_id"])] = item_score(lls, int(s["target"]))
    return out


def sample_values(samples: Iterable[dict[str, Any]], metric: str, filt: str | None = None
                  ) -> dict[int, float] | None:
    """{doc_id: the sample's own ``metric``} from lm-eval's logged samples of any task (its per-item
    ``acc``, ``exact_match``, ...) under filter ``filt`` (a sample without a ``filter`` key passes);
    None when a sample lacks the metric or its value is not one number (e.g. IFEval's per-instruction
    lists)."""
    out = {}
    for s in samples:
        if filt is not None and s.get("filter", filt) != filt:
            continue
        v = s.get(metric)
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)):
            return None
        out[int(s["doc_id"])] = float(v)
    return out or None


def task_summary(items: dict[int, tuple[float, int]]) -> dict[str, Any]:
    scores = [v for v, _ in items.values()]
    value, stderr = mean_stderr(scores)
    return {"value": value, "stderr": stderr, "n": len(scores),
            "ties": sum(1 for _, k in items.values() if k > 1)}


def verdict(task: dict[str, Any], items: dict[int, tuple[float, int]],
            control_items: dict[int, tuple[float, int]] | None, chance: float) -> dict[str, Any]:
    """z-scores against chance and the control, and whether the task is measurable.

    Against chance: the one-sample test of a proportion, whose standard error is the one under
    the null hypothesis, sqrt(chance (1 - chance) / n): the sample's own error is 0 for a task
    every item of which is right (a model that learnt it), which left z undefined and the task
    "not measurable"."""
    null_se = math.sqrt(chance * (1 - chance) / task["n"]) if task["n"] else 0.0
    out: dict[str, Any] = {"chance": chance,
                           "z_chance": (task["value"] - chance) / null_se if null_se else None}
    if control_items is None:
        out.update(control=None, z_control=None, measurable=None)
        return out
    common = sorted(set(items) & set(control_items))
    diff_mean, diff_se = mean_stderr([items[i][0] - control_items[i][0] for i in common])
    out["control"] = task_summary({i: control_items[i] for i in common})
    out["z_control"] = diff_mean / diff_se if diff_se else None
    out["measurable"] = bool(out["z_chance"] is not None and out["z_chance"] > Z
                             and out["z_control"] is not None and out["z_control"] > Z)
    return out
