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


def make_multiple_choice_items(kind: str, n: int, *, seed: int,
                               world_seed: int = W.DEFAULT_WORLD_SEED) -> list[dict]:
    """``n`` four-choice items of one ``kind`` (see :data:`MC_KINDS`):
    ``{"id", "kind", "question", "choices", "gold"}``.

    ``question`` ends with "Answer:" and choices carry no leading space (lm-evaluation-harness
    adds the target delimiter " "), matching the corpus' "Question: ...\nAnswer: x." sheets.
    Held-out (eval) facts and problems only. Gold positions cycle 0, 1, 2, 3 (exactly
    uniform: a model that prefers a position cannot beat chance with it); the wrong
    choices are in random order. Kinds:

    * ``fact``: closed book, the wrong choices from the answer's own category
      (only knowledge of the fact separates them);
    * ``context``: as ``fact`` with a passage stating the fact first;
    * ``arithmetic``: answers up to 20, wrong numbers within 3 of the answer;
    * ``relation``: the question's relation picks the category: the four choices are
      the true answer and one word from each of the three other categories (e.g. "What
      is the job of Zol?" -> baker / red / soup / singing). The gold category is
      uniform, so a question-blind model cannot beat chance by preferring one category.
    """
    if kind not in MC_KINDS:
        raise ValueError(f"unknown multiple-choice kind {kind!r}; known: {MC_KINDS}")
    world = W.build_world(world_seed)
    facts, arith = _split_pools(world, world_seed)["eval"]
    by_cat = _category_facts(facts)
    arith = [(q, a) for q, a in arith if int(a) <= MAX_NUMBER]
    rng = random.Random(f"mc:{seed}:{kind}")
    items = []
    for i in range(n):
        ctx = ""
        if kind == "arithmetic":
            q, gold = rng.choice(arith)
            wrong = _near_numbers(gold, rng)
        elif kind == "relation":
            cats = rng.sample(sorted(CATEGORIES), N_CHOICES)
            f = rng.choice(by_cat[cats[0]])
            q, gold = W.question_for(f, rng), f.answer
            wrong = [rng.choice(CATEGORIES[c]) for c in cats[1:]]
        else:
            f = rng.choice(by_cat[rng.choice(sorted(CATEGORIES))])
            q, gold = W.question_for(f, rng), f.answer
            wrong = rng.sample([x for x in CATEGORIES[f.relation] if x != gold], N_CHOICES - 1)
            if kind == "context":
                ctx = _context(world, f, rng) + "\n"
        rng.shuffle(wrong)
        position = i % N_CHOICES
        items.append({"id": i, "kind": kind, "question": f"{ctx}Question: {q}\nAnswer:",
                      "choices": _place(gold, wrong, position), "gold": position})
    return items
