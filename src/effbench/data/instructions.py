"""Instruction (SFT) data and a multiple-choice eval drawn from the synthetic world.

Three kinds of item, all answerable from what the pretraining corpus states:
``fact`` (closed book: a world fact, e.g. "Where does Zol live?" -> "Powick"),
``context`` (the facts are given in a short passage first) and ``arithmetic``.
Questions use the same phrasings as the corpus' question/answer sheets.
Eval items never share a (subject, relation) or arithmetic problem with train items.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from . import world as W

SFT_TRAIN_NAME = "effbench_sft_train"
SFT_EVAL_NAME = "effbench_sft_eval"
_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
_MIX = (("fact", 0.5), ("context", 0.25), ("arithmetic", 0.25))


def _all_arithmetic() -> list[tuple[str, str]]:
    out = [(f"What is {a} plus {b}?", str(a + b)) for a in range(21) for b in range(21)]
    out += [(f"What is {a} minus {b}?", str(a - b)) for a in range(21) for b in range(a + 1)]
    out += [(f"What is {a} times {b}?", str(a * b)) for a in range(10) for b in range(10)]
    return out


def _split_pools(world: W.World, seed: int):
    """Held-out split of facts and arithmetic problems: ~20% of each goes to eval."""
    rng = random.Random(f"heldout:{seed}")
    facts, arith = list(world.facts()), _all_arithmetic()
    rng.shuffle(facts)
    rng.shuffle(arith)
    nf, na = len(facts) // 5, len(arith) // 5
    return {"eval": (facts[:nf], arith[:na]), "train": (facts[nf:], arith[na:])}


def _context(world: W.World, fact: W.Fact, rng: random.Random) -> str:
    """A short passage stating ``fact`` among other facts about the same subject."""
    others = [f for f in world.facts_about(fact.subject) if f.relation != fact.relation]
    sents = [W.statement_for(f, rng) for f in rng.sample(others, min(3, len(others)))]
    sents.insert(rng.randint(0, len(sents)), W.statement_for(fact, rng))
    return " ".join(sents)


def _item(kind: str, world: W.World, pools, rng: random.Random) -> tuple[str, str, str, W.Fact | None]:
    """(question, context, answer, fact) for one item of ``kind``."""
    facts, arith = pools
    if kind == "arithmetic":
        q, a = rng.choice(arith)
        return q, "", a, None
    f = rng.choice(facts)
    ctx = _context(world, f, rng) if kind == "context" else ""
    return W.question_for(f, rng), ctx, f.answer, f


def _kinds(n: int, rng: random.Random) -> list[str]:
    out = []
    for kind, share in _MIX:
        out += [kind] * round(n * share)
    out = (out + [_MIX[0][0]] * n)[:n]
    rng.shuffle(out)
    return out


def make_sft_task(out_dir: Path, *, n_train: int, n_eval: int, seed: int,
                  world_seed: int = W.DEFAULT_WORLD_SEED) -> dict:
    """Write ``sft_train.json``, ``sft_eval.json`` (Alpaca: instruction/input/output, the
    output one word or number) and ``dataset_info.json`` for LlamaFactory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = W.build_world(world_seed)
    pools = _split_pools(world, world_seed)
    summary = {"seed": seed, "world_seed": world_seed, "files": {}, "kinds": {}}
    for split, n in (("train", n_train), ("eval", n_eval)):
        rng = random.Random(f"sft:{seed}:{split}")
        rows, counts = [], {}
        for kind in _kinds(n, rng):
            q, ctx, a, _ = _item(kind, world, pools[split], rng)
            rows.append({"instruction": q, "input": ctx, "output": a})
            counts[kind] = counts.get(kind, 0) + 1
        name = f"sft_{split}.json"
        (out_dir / name).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
        summary["files"][split] = name
        summary["kinds"][split] = counts
    info = {SFT_TRAIN_NAME: {"file_name": "sft_train.json", "columns": dict(_COLUMNS)},
            SFT_EVAL_NAME: {"file_name": "sft_eval.json", "columns": dict(_COLUMNS)}}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    summary["dataset_info"] = "dataset_info.json"
    summary["datasets"] = {"train": SFT_TRAIN_NAME, "eval": SFT_EVAL_NAME}
    return summary


#: Relations whose answers are frequent category words, less the few that the default
#: corpus' tokenizer (vocab 1024) splits: every choice is then one token, so the four
#: choices of an item have the same token length and the summed log-likelihood (lm-eval's
#: ``acc``) does not favour the shorter choice. Species, town features, regions and names
#: are 2-5 tokens and are left out. tests/pretrain/test_data.py checks the default corpus;
#: scores.json reports the measured share of equal-length items for any tokenizer.
MULTI_TOKEN = frozenset({"honey", "smith"})
CATEGORIES: dict[str, tuple[str, ...]] = {
    rel: tuple(w for w in words if w not in MULTI_TOKEN)
    for rel, words in (("colour", W.COLOURS), ("food", W.FOODS), ("job", W.JOBS), ("hobby", W.HOBBIES))
}
#: Arithmetic answers and choices stay in 0..20, the operands of the corpus' drills (one
#: token each; larger numbers are mostly two).
MAX_NUMBER = 20
MC_KINDS = ("fact", "context", "arithmetic", "relation")
N_CHOICES = 4


def _category_facts(facts: list[W.Fact]) -> dict[str, list[W.Fact]]:
    by: dict[str, list[W.Fact]] = {c: [] for c in CATEGORIES}
    for f in facts:
        if f.relation in by and f.answer in CATEGORIES[f.relation]:
            by[f.relation].append(f)
    return by


def _near_numbers(answer: str, rng: random.Random) -> list[str]:
    """Three wrong numbers near ``answer``, all in 0..MAX_NUMBER."""
    a = int(answer)
    near = [str(a + d) for d in (-3, -2, -1, 1, 2, 3) if 0 <= a + d <= MAX_NUMBER]
    return rng.sample(near, N_CHOICES - 1)


def _place(gold: str, wrong: list[str], position: int) -> list[str]:
    return wrong[:position] + [gold] + wrong[position:]


def _neighbours(world: W.World, fact: W.Fact) -> list[str]:
    """Subjects the corpus names beside ``fact.subject``, nearest first: a person's best friend,
    then the other residents of the town; an animal's fellow pets of the same town."""
    if fact.kind == "person":
        p = world.person[fact.subject]
        return [p.friend] + [r for r in world.town[p.town].residents if r not in (p.name, p.friend)]
    town = world.person[world.animal[fact.subject].owner].town
    return [a.name for a in world.animals if a.name != fact.subject and world.person[a.owner].town == town]


def _neighbour_answers(world: W.World, answers: dict[tuple[str, str], str], fact: W.Fact,
                       rng: random.Random) -> list[str]:
    """Three wrong choices for the relation task: the same relation's answers for the subject's
    neighbours (friend first), distinct, one-token, not gold; filled from the category if the
    neighbours have fewer than three."""
    near = _neighbours(world, fact)
    first = 1 if fact.kind == "person" else 0  # the best friend stays first
    rest = near[first:]
    rng.shuffle(rest)
    wrong: list[str] = []
    for s in near[:first] + rest:
        a = answers.get((s, fact.relation))
        if a in CATEGORIES[fact.relation] and a != fact.answer and a not in wrong:
            wrong.append(a)
        if len(wrong) == N_CHOICES - 1:
            return wrong
    spare = [x for x in CATEGORIES[fact.relation] if x != fact.answer and x not in wrong]
    return wrong + rng.sample(spare, N_CHOICES - 1 - len(wrong))


def _swap_subject(question: str, fact: W.Fact, choices: list[str], subjects: dict[tuple[str, str], list[str]],
                  answers: dict[tuple[str, str], str], rng: random.Random) -> str:
    """``question`` about another subject of the same kind whose answer to the relation is none of
    ``choices``: the question keeps its form and the item its choices, but the fact is gone."""
    pool = [s for s in subjects[(fact.kind, fact.relation)]
            if s != fact.subject and answers[(s, fact.relation)] not in choices]
    other = rng.choice(pool)
    swapped, n = re.subn(rf"\b{re.escape(fact.subject)}\b", other, question)
    if n != 1:
        raise AssertionError(f"subject {fact.subject!r} appears {n} times in {question!r}")
    return swapped


def _swap_problem(question: str, choices: list[str], arith: list[tuple[str, str]], rng: random.Random) -> str:
    """Another problem of the same operation whose answer is none of ``choices``."""
    op = question.split()[3]  # "What is 7 plus 5?"
    return rng.choice([q for q, a in arith if q.split()[3] == op and a not in choices and q != question])


def make_multiple_choice_items(kind: str, n: int, *, seed: int,
                               world_seed: int = W.DEFAULT_WORLD_SEED) -> list[dict]:
    """``n`` four-choice items of one ``kind`` (see :data:`MC_KINDS`):
    ``{"id", "kind", "question", "choices", "gold", "question_swapped"}``.

    ``question`` ends with "Answer:" and choices carry no leading space (lm-evaluation-harness
    adds the target delimiter " "), matching the corpus' "Question: ...\nAnswer: x." sheets.
    Held-out (eval) facts and problems only. Gold positions cycle 0, 1, 2, 3 (exactly
    uniform: a model that prefers a position cannot beat chance with it); the wrong
    choices are in random order. The four choices of every item are words of one category
    (or numbers), so knowing which kind of word answers the question gains nothing: only
    the fact separates them. Kinds:

    * ``fact``: closed book, the wrong choices drawn from the answer's category;
    * ``context``: as ``fact`` with a passage stating the fact first (the passage's other
      facts are of other relations, so the category word in it is gold: the swapped
      control below tells reading the subject from copying that word);
    * ``arithmetic``: answers up to 20, wrong numbers within 3 of the answer;
    * ``relation``: closed book, the wrong choices are the same relation's answers for the
      subjects the corpus names beside this one (a person's best friend, then the other
      residents of the town; an animal's fellow pets of the town): e.g. "What is the job of
      Zol?" -> baker / the friend's job / two neighbours' jobs. A model that has bound facts
      to the wrong person of a story, or knows only which answers go with a town, is not
      helped. The gold category is uniform over the four.

    ``question_swapped`` (the swapped-subject control, :mod:`effbench.evaluate.tasks`): the same
    prompt with the question's subject replaced by another subject of the same kind whose answer
    to the relation is none of the four choices (arithmetic: another problem of the same
    operation whose answer is none of them). A model that answers from the fact has nothing
    to pick there; one that scores as well on it as on the question did not use the fact.
    """
    if kind not in MC_KINDS:
        raise ValueError(f"unknown multiple-choice kind {kind!r}; known: {MC_KINDS}")
    world = W.build_world(world_seed)
    facts, arith = _split_pools(world, world_seed)["eval"]
    by_cat = _category_facts(facts)
    answers = {(f.subject, f.relation): f.answer for f in world.facts()}
    subjects: dict[tuple[str, str], list[str]] = {}
    for f in world.facts():
        subjects.setdefault((f.kind, f.relation), []).append(f.subject)
    arith = [(q, a) for q, a in arith if int(a) <= MAX_NUMBER]
    rng = random.Random(f"mc:{seed}:{kind}")
    # The control has its own stream, so adding it left the items of fact, context and arithmetic as they were.
    swap_rng = random.Random(f"mc-swap:{seed}:{kind}")
    items = []
    for i in range(n):
        ctx = ""
        f: W.Fact | None = None
        if kind == "arithmetic":
            q, gold = rng.choice(arith)
            wrong = _near_numbers(gold, rng)
        elif kind == "relation":
            f = rng.choice(by_cat[rng.choice(sorted(CATEGORIES))])
            q, gold = W.question_for(f, rng), f.answer
            wrong = _neighbour_answers(world, answers, f, rng)
        else:
            f = rng.choice(by_cat[rng.choice(sorted(CATEGORIES))])
            q, gold = W.question_for(f, rng), f.answer
            wrong = rng.sample([x for x in CATEGORIES[f.relation] if x != gold], N_CHOICES - 1)
            if kind == "context":
                ctx = _context(world, f, rng) + "\n"
        rng.shuffle(wrong)
        position = i % N_CHOICES
        choices = _place(gold, wrong, position)
        q_swapped = (_swap_problem(q, choices, arith, swap_rng) if f is None
                     else _swap_subject(q, f, choices, subjects, answers, swap_rng))
        items.append({"id": i, "kind": kind, "question": f"{ctx}Question: {q}\nAnswer:",
                      "choices": choices, "gold": position,
                      "question_swapped": f"{ctx}Question: {q_swapped}\nAnswer:"})
    return items
