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

A task is *measurable* on a model when its score is above chance by more than ``Z`` standard
errors and above each of its controls (:mod:`effbench.evaluate.tasks`: question-blind, swapped
subject) by more than ``Z`` standard errors of the paired per-item difference (a control scores
the same items). Both standard errors are the null hypothesis' (as a test's): against chance
sqrt(chance (1 - chance) / n); against a control sqrt(sum d^2) / n for the per-item differences d
(under "no difference" each d is + or - with probability 1/2: the sign-flip test, whose
variance does not vanish when a model that learnt the task beats the control on every item by
the same amount, where the sample's own variance is 0).
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


def paired_z(items: dict[int, tuple[float, int]], control_items: dict[int, tuple[float, int]]
             ) -> tuple[dict[str, Any], float | None]:
    """The control's summary on the items both scored, and z of the mean per-item difference
    under the null hypothesis: sum(d) / sqrt(sum(d^2)); None when every difference is 0."""
    common = sorted(set(items) & set(control_items))
    diffs = [items[i][0] - control_items[i][0] for i in common]
    norm = math.sqrt(sum(d * d for d in diffs))
    return task_summary({i: control_items[i] for i in common}), (sum(diffs) / norm if norm else None)


def verdict(task: dict[str, Any], items: dict[int, tuple[float, int]],
            control_items: dict[int, tuple[float, int]] | None, chance: float,
            swapped_items: dict[int, tuple[float, int]] | None = None) -> dict[str, Any]:
    """z-scores against chance and the controls, and whether the task is measurable.

    Against chance: the one-sample test of a proportion, whose standard error is the one under
    the null hypothesis, sqrt(chance (1 - chance) / n): the sample's own error is 0 for a task
    every item of which is right (a model that learnt it), which left z undefined and the task
    "not measurable". Against a control (``control_items``: question-blind; ``swapped_items``:
    swapped subject): :func:`paired_z`. No question-blind control (lm-eval's own tasks): no
    verdict (``measurable`` None). A task must beat every control it has."""
    null_se = math.sqrt(chance * (1 - chance) / task["n"]) if task["n"] else 0.0
    out: dict[str, Any] = {"chance": chance,
                           "z_chance": (task["value"] - chance) / null_se if null_se else None}
    if control_items is None:
        out.update(control=None, z_control=None, swapped=None, z_swapped=None, measurable=None)
        return out
    out["control"], out["z_control"] = paired_z(items, control_items)
    out["swapped"], out["z_swapped"] = paired_z(items, swapped_items) if swapped_items is not None else (None, None)
    zs = [out["z_chance"], out["z_control"]] + ([out["z_swapped"]] if swapped_items is not None else [])
    out["measurable"] = all(z is not None and z > Z for z in zs)
    return out
