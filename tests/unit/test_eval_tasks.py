"""The offline multiple-choice tasks the pipeline writes, and their tie-aware scoring."""

from __future__ import annotations

import collections
import json

import pytest
import yaml

from effbench.config import LOCAL_TASKS
from effbench.data import world as W
from effbench.data.instructions import CATEGORIES, MAX_NUMBER, N_CHOICES
from effbench.evaluate.run import needs_builtin_tasks, summarize, with_controls
from effbench.evaluate.scoring import item_score, mean_stderr
from effbench.evaluate.tasks import CHANCE, CONTROL_PROMPT, SWAPPED_PROMPT, control_task, make_local_tasks, swapped_task

N = 48


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks")
    written = make_local_tasks(out, items_per_task=N, seed=7)
    items = {t: [json.loads(line) for line in (out / f"{t}.jsonl").read_text().splitlines()] for t in LOCAL_TASKS}
    return out, written, items


def test_every_task_and_its_two_controls_are_written(tasks):
    out, written, _ = tasks
    assert set(written) == set(LOCAL_TASKS) | {twin(t) for t in LOCAL_TASKS for twin in (control_task, swapped_task)}
    for t in LOCAL_TASKS:
        spec, ctrl, swap = (yaml.safe_load((out / f"{name}.yaml").read_text())
                            for name in (t, control_task(t), swapped_task(t)))
        assert spec["doc_to_text"] == "{{question}}" and ctrl["doc_to_text"] == CONTROL_PROMPT
        assert swap["doc_to_text"] == SWAPPED_PROMPT == "{{question_swapped}}"
        assert ctrl["dataset_kwargs"] == spec["dataset_kwargs"] == swap["dataset_kwargs"]  # the same items
        assert ctrl["metadata"]["control_of"] == swap["metadata"]["control_of"] == t
        assert spec["metadata"]["chance"] == CHANCE
    assert with_controls(["effbench_mc_fact", "leaderboard_bbh"], out) == [
        "effbench_mc_fact", "leaderboard_bbh", "effbench_mc_fact_blind", "effbench_mc_fact_swapped"]
    # lm-eval indexes its built-in tasks only when a task is not the pipeline's own
    assert not needs_builtin_tasks(["effbench_mc_fact", "effbench_mc_relation"], out)
    assert needs_builtin_tasks(["effbench_mc_fact", "leaderboard_bbh"], out)
    assert needs_builtin_tasks(["effbench_mc_fact"], None)


def test_gold_positions_are_exactly_uniform(tasks):
    for t, items in tasks[2].items():
        assert len(items) == N
        counts = collections.Counter(r["gold"] for r in items)
        assert counts == {p: N // N_CHOICES for p in range(N_CHOICES)}, t


def test_choices_are_distinct_one_token_words_and_gold_is_true(tasks):
    world = W.build_world()
    facts = {(f.subject, f.relation): f.answer for f in world.facts()}
    words = {w for ws in CATEGORIES.values() for w in ws}
    for t, items in tasks[2].items():
        for r in items:
            c = r["choices"]
            assert len(c) == N_CHOICES == len(set(c)) and r["question"].endswith("\nAnswer:")
            if r["kind"] == "arithmetic":
                assert all(0 <= int(x) <= MAX_NUMBER for x in c)
                expr = r["question"].split("What is ")[1].split("?")[0]
                a, op, b = expr.split(" ")
                assert int(c[r["gold"]]) == {"plus": int(a) + int(b), "minus": int(a) - int(b),
                                             "times": int(a) * int(b)}[op]
                continue
            assert set(c) <= words
            subject = next(s for s in world.person.keys() | world.animal.keys()
                           if f" {s} " in r["question"].split("Question:")[1] + " "
                           or f" {s}?" in r["question"].split("Question:")[1]
                           or f" {s}'s" in r["question"].split("Question:")[1])
            answers = {a for (s, _), a in facts.items() if s == subject}
            assert c[r["gold"]] in answers
            cats = [next(k for k, ws in CATEGORIES.items() if x in ws) for x in c]
            assert len(set(cats)) == 1  # wrong choices from the answer's own category (every kind)
            if r["kind"] == "context":
                assert c[r["gold"]] in r["question"].split("Question:")[0]


def test_relation_task_gold_category_is_uniform():
    from effbench.data.instructions import make_multiple_choice_items

    items = make_multiple_choice_items("relation", 400, seed=3)
    gold_cats = collections.Counter(next(k for k, ws in CATEGORIES.items() if r["choices"][r["gold"]] in ws)
                                    for r in items)
    assert set(gold_cats) == set(CATEGORIES) and min(gold_cats.values()) > 400 / len(CATEGORIES) * 0.7


def test_a_tie_counts_one_over_k():
    assert item_score([-1.0, -1.0, -2.0, -3.0], 1) == (0.5, 2)
    assert item_score([-1.0, -1.0, -1.0, -1.0], 3) == (0.25, 4)
    assert item_score([-1.0, -1.0, -2.0, -3.0], 2) == (0.0, 2)
    assert item_score([-2.0, -1.0, -2.0, -3.0], 1) == (1.0, 1)
    assert mean_stderr([0.0, 1.0]) == (0.5, 0.5)


def _sample(doc_id: int, lls: list[float], gold: int) -> dict:
    # The shape lm-eval logs for a multiple-choice doc: one (loglik, is_greedy) per choice.
    return {"doc_id": doc_id, "target": gold, "filtered_resps": [(x, False) for x in lls],
            "doc": {"choices": ["a", "b", "c", "d"], "gold": gold}}


def test_summarize_rescores_ties_and_compares_with_the_control():
    task, ctrl = "effbench_mc_fact", control_task("effbench_mc_fact")
    # 40 items: gold always at position 0 and every item a 4-way tie, which lm-eval's argmax
    # counts as correct (acc 1.0); tie-aware it is 0.25 = chance.
    tied = [_sample(i, [-1.0] * 4, 0) for i in range(40)]
    res = {"results": {task: {"acc,none": 1.0, "acc_stderr,none": 0.0},
                       ctrl: {"acc,none": 1.0, "acc_stderr,none": 0.0}},
           "n-samples": {task: {"effective": 40}}, "samples": {task: tied, ctrl: tied}}
    v = summarize(res, [task], {})["tasks"][task]
    assert v["metric"] == "acc_tie" and v["lm_eval_acc"] == 1.0
    assert v["value"] == pytest.approx(0.25) and v["ties"] == 40 and v["measurable"] is False
    # Right on 30 of 40 (no ties) against a control at chance: measurable.
    good = [_sample(i, [-1.0, -2.0, -3.0, -4.0] if i < 30 else [-4.0, -1.0, -2.0, -3.0], 0) for i in range(40)]
    blind = [_sample(i, [-1.0, -2.0, -3.0, -4.0] if i % 4 == 0 else [-4.0, -1.0, -2.0, -3.0], 0) for i in range(40)]
    res["samples"] = {task: good, ctrl: blind}
    out = summarize(res, [task], {})
    v = out["tasks"][task]
    assert v["value"] == pytest.approx(0.75) and v["ties"] == 0 and out["accuracy"] == pytest.approx(0.75)
    assert v["control"]["value"] == pytest.approx(0.25) and v["z_chance"] > 3 and v["z_control"] > 3
    assert v["measurable"] is True
    assert v["z_chance"] == pytest.approx((0.75 - 0.25) / (0.25 * 0.75 / 40) ** 0.5)  # the null hypothesis' SE
    # Right on every item (a learnt task): the sample's SE is 0, z against chance still defined.
    perfect = [_sample(i, [-1.0, -2.0, -3.0, -4.0], 0) for i in range(40)]
    res["samples"] = {task: perfect, ctrl: blind}
    v = summarize(res, [task], {})["tasks"][task]
    assert v["value"] == 1.0 and v["stderr"] == 0.0 and v["z_chance"] > 3 and v["measurable"] is True
    # ... and against a control wrong on every item: every difference is 1, whose sample variance is
    # 0; z is the null hypothesis' (sign flips): sum(d) / sqrt(sum(d^2)) = sqrt(40).
    wrong = [_sample(i, [-4.0, -1.0, -2.0, -3.0], 0) for i in range(40)]
    res["samples"] = {task: perfect, ctrl: wrong}
    v = summarize(res, [task], {})["tasks"][task]
    assert v["z_control"] == pytest.approx(40 ** 0.5) and v["measurable"] is True
    assert v["swapped"] is None and v["z_swapped"] is None  # no swapped twin logged: not required


def test_summarize_fails_a_task_its_swapped_subject_scores_as_well():
    """The swapped-subject twin asks about someone whose answer is none of the choices: a model that
    scores as well there did not use the fact (it read the question's form or a passage's word)."""
    task = "effbench_mc_context"
    ctrl, swap = control_task(task), swapped_task(task)
    good = [_sample(i, [-1.0, -2.0, -3.0, -4.0] if i < 30 else [-4.0, -1.0, -2.0, -3.0], 0) for i in range(40)]
    blind = [_sample(i, [-1.0, -2.0, -3.0, -4.0] if i % 4 == 0 else [-4.0, -1.0, -2.0, -3.0], 0) for i in range(40)]
    res = {"results": {t: {"acc,none": 0.75, "acc_stderr,none": 0.07} for t in (task, ctrl, swap)},
           "n-samples": {task: {"effective": 40}}, "samples": {task: good, ctrl: blind, swap: good}}
    v = summarize(res, [task], {})["tasks"][task]
    assert v["z_control"] > 3 and v["swapped"]["value"] == pytest.approx(0.75)
    assert v["z_swapped"] is None and v["measurable"] is False
    res["samples"][swap] = blind  # the swapped subject at chance: the fact was used
    v = summarize(res, [task], {})["tasks"][task]
    assert v["swapped"]["value"] == pytest.approx(0.25) and v["z_swapped"] > 3 and v["measurable"] is True
