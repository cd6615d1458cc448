"""Issue #19 item 1: the multiple-choice tasks cannot be passed without the fact.

Each test scores the items the pipeline writes (effbench.data.instructions) as a model with one
known behaviour would answer them: one that knows every fact of the world, one that knows only
which category of word a question asks for, one that copies the category word of a passage, one
that lost half its facts. Scores go through the pipeline's own tie-aware scoring and verdict
(effbench.evaluate.scoring) and its paired test (effbench.measure.paired): a shortcut must score
chance or fail a control, a model that knows the facts must pass, and lost recall must show as a
drop."""

from __future__ import annotations

import re
import zlib

import pytest

from effbench.data import world as W
from effbench.data.instructions import CATEGORIES, MAX_NUMBER, make_multiple_choice_items
from effbench.evaluate.scoring import Z, item_score, task_summary, verdict
from effbench.evaluate.tasks import CHANCE
from effbench.measure.paired import paired_comparison

N = 200
WORLD = W.build_world()
ANSWERS = {(f.subject, f.relation): f.answer for f in WORLD.facts()}
KIND_OF = {**{p: "person" for p in WORLD.person}, **{a: "animal" for a in WORLD.animal}}
FACT_KINDS = ("fact", "context", "relation")


def _question_patterns() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for key, phrasings in W.QUESTIONS.items():
        for q in phrasings:
            pattern = re.escape(q).replace(re.escape("{s}"), r"(?P<s>[A-Z][a-z]+)")
            out.append((re.compile(pattern + "$"), key.removeprefix("animal.")))
    return out


PATTERNS = _question_patterns()


def parse(prompt: str) -> tuple[str, str, str]:
    """(passage, subject, relation) of a prompt "<passage>Question: <q>\\nAnswer:"."""
    passage, q = prompt.removesuffix("\nAnswer:").rsplit("Question: ", 1)
    for pattern, relation in PATTERNS:
        m = pattern.match(q)
        if m:
            return passage, m["s"], relation
    raise AssertionError(f"no question phrasing matches {q!r}")


def pick(choices: list[str], gold: int, candidates: set[str]) -> tuple[float, int]:
    """The tie-aware score of a model whose best choices are ``candidates`` (a uniform guess among
    them; among all four when none is a choice)."""
    best = [c for c in choices if c in candidates] or choices
    return item_score([0.0 if c in best else -1.0 for c in choices], gold)


def fact_knower(item: dict, prompt: str, knows=lambda subject: True) -> tuple[float, int]:
    _, s, rel = parse(prompt)
    return pick(item["choices"], item["gold"], {ANSWERS[(s, rel)]} if knows(s) else set())


def category_guesser(item: dict, prompt: str) -> tuple[float, int]:
    """Knows which kind of word the question asks for, nothing about whom."""
    _, _, rel = parse(prompt)
    return pick(item["choices"], item["gold"], set(CATEGORIES[rel]))


def passage_copier(item: dict, prompt: str) -> tuple[float, int]:
    """Picks the choice the passage mentions, whoever the question is about."""
    passage, _, _ = parse(prompt)
    return pick(item["choices"], item["gold"], {c for c in item["choices"] if re.search(rf"\b{c}\b", passage)})


def half_recall(subject: str) -> bool:
    return zlib.crc32(subject.encode()) % 2 == 0


def recall_lost_but_category_known(item: dict, prompt: str) -> tuple[float, int]:
    """A quantized model that kept the categories but lost the facts of half the subjects."""
    _, s, rel = parse(prompt)
    return pick(item["choices"], item["gold"], {ANSWERS[(s, rel)]} if half_recall(s) else set(CATEGORIES[rel]))


def score(items: list[dict], model, field: str = "question") -> dict[int, tuple[float, int]]:
    return {r["id"]: model(r, r[field]) for r in items}


def judge(items: list[dict], model) -> dict:
    real = score(items, model)
    blind = {r["id"]: pick(r["choices"], r["gold"], set()) for r in items}  # no question: no preference
    return verdict(task_summary(real), real, blind, CHANCE, score(items, model, "question_swapped"))


@pytest.fixture(scope="module")
def items() -> dict[str, list[dict]]:
    return {k: make_multiple_choice_items(k, N, seed=11) for k in (*FACT_KINDS, "arithmetic")}


@pytest.mark.parametrize("kind", FACT_KINDS)
def test_knowing_the_category_alone_scores_chance(items, kind):
    """Every choice is a word of the category the question asks for, so a model that knows only
    the category is at chance (the relation task used to offer one word per category: 1.000)."""
    s = task_summary(score(items[kind], category_guesser))
    assert s["value"] == pytest.approx(CHANCE)
    v = judge(items[kind], category_guesser)
    assert v["measurable"] is False and abs(v["z_chance"]) < 1e-9


@pytest.mark.parametrize("kind", FACT_KINDS)
def test_knowing_the_facts_passes_every_control(items, kind):
    v = judge(items[kind], fact_knower)
    assert task_summary(score(items[kind], fact_knower))["value"] == 1.0
    assert v["swapped"]["value"] == pytest.approx(CHANCE)  # the swapped subject's answer is no choice
    assert v["measurable"] is True and v["z_swapped"] > Z and v["z_control"] > Z


def test_copying_the_passage_fails_the_swapped_control(items):
    """The passage names one word of the asked category, gold: copying it scores 1.000 and the
    question-blind control (which removes the passage too) cannot tell; the swapped subject can."""
    v = judge(items["context"], passage_copier)
    assert task_summary(score(items["context"], passage_copier))["value"] == 1.0
    assert v["z_control"] > Z and v["swapped"]["value"] == 1.0
    assert v["z_swapped"] is None and v["measurable"] is False


def test_lost_recall_shows_a_drop_on_the_relation_task(items):
    """bf16 knows every fact; int4 kept the categories but lost the facts of half the subjects.
    On the relation task (and the fact task) that is a significant paired drop of about 3/8."""
    for kind in ("relation", "fact"):
        rows = items[kind]
        base = [v for v, _ in score(rows, fact_knower).values()]
        comp = [v for v, _ in score(rows, recall_lost_but_category_known).values()]
        c = paired_comparison([(comp, base)])
        assert c.diff < -0.25 and c.significant and c.diff_interval().high < 0, kind


def test_relation_wrong_choices_are_neighbours_answers(items):
    """The relation task's wrong choices are the same relation's answers for the subjects the corpus
    names beside this one (best friend, the town's residents; an animal's fellow pets of the town)."""
    near_share = []
    for r in items["relation"]:
        _, s, rel = parse(r["question"])
        if KIND_OF[s] == "person":
            p = WORLD.person[s]
            near = {p.friend, *WORLD.town[p.town].residents} - {s}
        else:
            town = WORLD.person[WORLD.animal[s].owner].town
            near = {a.name for a in WORLD.animals if WORLD.person[a.owner].town == town} - {s}
        wrong = [c for i, c in enumerate(r["choices"]) if i != r["gold"]]
        assert r["choices"][r["gold"]] == ANSWERS[(s, rel)] and set(wrong) <= set(CATEGORIES[rel])
        near_share += [any(ANSWERS.get((n, rel)) == c for n in near) for c in wrong]
    assert sum(near_share) / len(near_share) > 0.9


@pytest.mark.parametrize("kind", FACT_KINDS)
def test_the_swapped_prompt_changes_only_the_subject(items, kind):
    for r in items[kind]:
        passage, s, rel = parse(r["question"])
        passage2, s2, rel2 = parse(r["question_swapped"])
        assert (passage2, rel2) == (passage, rel) and s2 != s and KIND_OF[s2] == KIND_OF[s]
        assert r["question_swapped"] == r["question"].replace(f"Question: {r['question'].split('Question: ')[1]}",
                                                              f"Question: {r['question'].split('Question: ')[1]}"
                                                              .replace(s, s2))
        assert ANSWERS[(s2, rel)] not in r["choices"]


def test_the_swapped_arithmetic_problem_has_no_answer_among_the_choices(items):
    def solve(prompt: str) -> int:
        a, op, b = prompt.split("What is ")[1].split("?")[0].split(" ")
        return {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]

    for r in items["arithmetic"]:
        op = r["question"].split()[4], r["question_swapped"].split()[4]  # "Question: What is 7 plus 5?"
        assert op[0] == op[1] and r["question_swapped"] != r["question"]
        assert int(r["choices"][r["gold"]]) == solve(r["question"])
        assert 0 <= solve(r["question_swapped"]) <= MAX_NUMBER and str(solve(r["question_swapped"])) not in r["choices"]
