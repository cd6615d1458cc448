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


def _distractors(answer: str, fact: W.Fact | None, rng: random.Random) -> list[str]:
    if fact is not None:
        pool = [x for x in fact.pool if x != answer]
        return rng.sample(pool, 3)
    a = int(answer)
    near = [str(a + d) for d in (-3, -2, -1, 1, 2, 3, 10) if a + d >= 0]
    return rng.sample(near, 3)


def make_multiple_choice_eval(out_dir: Path, *, n: int, seed: int,
                              world_seed: int = W.DEFAULT_WORLD_SEED,
                              file_name: str = "multiple_choice.jsonl") -> Path:
    """Write ``n`` four-choice questions as jsonl: ``{"id", "kind", "question", "choices",
    "gold"}``. ``question`` ends with "Answer:" and choices carry no leading space
    (lm-evaluation-harness adds its default target delimiter " "), matching the corpus'
    "Question: ...\\nAnswer: x." sheets. Uses the held-out (eval) facts and problems."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = W.build_world(world_seed)
    pools = _split_pools(world, world_seed)["eval"]
    rng = random.Random(f"mc:{seed}")
    lines = []
    for i, kind in enumerate(_kinds(n, rng)):
        q, ctx, a, fact = _item(kind, world, pools, rng)
        choices = _distractors(a, fact, rng) + [a]
        rng.shuffle(choices)
        text = (ctx + "\n" if ctx else "") + f"Question: {q}\nAnswer:"
        lines.append(json.dumps({"id": i, "kind": kind, "question": text, "choices": choices,
                                 "gold": choices.index(a)}, ensure_ascii=False))
    path = out_dir / file_name
    path.write_text("\n".join(lines) + "\n")
    return path
