"""Unit tests for effbench.data: synthetic corpus, tokenizer, token files, shards, SFT/MC."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from effbench.data import world as W
from effbench.data.instructions import MC_KINDS, make_multiple_choice_items, make_sft_task
from effbench.data.shards import ShardError, tokenize_text_shards
from effbench.data.synthetic import EOS, IM_END, IM_START, make_pretraining_corpus
from effbench.data.tokens import BatchSampler, TokenFile, load_meta, open_split

ARGS = dict(vocab_size=512, train_tokens=40_000, val_tokens=6_000)
FILES = ["train.bin", "val.bin", "meta.json", "tokenizer/tokenizer.json",
         "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"]


def _digest(d: Path) -> dict[str, str]:
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in FILES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    make_pretraining_corpus(d, seed=0, **ARGS)
    return d


@pytest.fixture(scope="module")
def hf_tok(corpus):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(corpus / "tokenizer"), local_files_only=True)


# --------------------------------------------------------------------------- world
def test_world_deterministic_and_bounded():
    a, b = W.build_world(7), W.build_world(7)
    assert a.facts() == b.facts()
    assert W.build_world(8).facts() != a.facts()
    names = [p.name for p in a.people] + [x.name for x in a.animals] + [t.name for t in a.towns]
    assert len(names) == len(set(names)) >= 300
    assert not {n.lower() for n in names} & W._reserved_words()
    rng = random.Random(0)
    text = "\n".join(W.render_document(a, rng) for _ in range(3000))
    words = set(re.findall(r"[A-Za-z]+", text)) - set(names)
    assert 150 < len(words) < 500  # bounded vocabulary of word types (names aside)


# --------------------------------------------------------------------------- corpus
def test_corpus_byte_identical_for_same_args(corpus, tmp_path):
    make_pretraining_corpus(tmp_path / "again", seed=0, **ARGS)
    assert _digest(tmp_path / "again") == _digest(corpus)
    make_pretraining_corpus(tmp_path / "other", seed=1, **ARGS)
    other = _digest(tmp_path / "other")
    assert other["train.bin"] != _digest(corpus)["train.bin"]
    assert other["val.bin"] != _digest(corpus)["val.bin"]
    assert other["tokenizer/tokenizer.json"] != _digest(corpus)["tokenizer/tokenizer.json"]


def test_meta_consistent_with_bins(corpus, hf_tok):
    meta = load_meta(corpus)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == len(hf_tok) == ARGS["vocab_size"]
    assert meta["tokens"] == {"train": ARGS["train_tokens"], "val": ARGS["val_tokens"]}
    assert meta["eos_id"] == hf_tok.eos_token_id == hf_tok.pad_token_id
    assert meta["generator"] and meta["generator_version"] and meta["seed"] == 0
    for split in ("train", "val"):
        path = corpus / meta["files"][split]
        assert path.stat().st_size == meta["tokens"][split] * 2 == meta["bytes"][split]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"][split]
        ids = np.fromfile(path, dtype="<u2")
        assert ids.max() < meta["vocab_size"]
        n_eos = int((ids == meta["eos_id"]).sum())
        assert meta["documents"][split] - 1 <= n_eos <= meta["documents"][split]


def _docs(path: Path, tok, eos: int) -> list[str]:
    ids = np.fromfile(path, dtype="<u2").tolist()
    out, cur = [], []
    for t in ids:
        if t == eos:
            out.append(tok.decode(cur))
            cur = []
        else:
            cur.append(t)
    return out  # complete documents only (a trailing cut document is dropped)


def test_train_val_disjoint(corpus, hf_tok):
    eos = hf_tok.eos_token_id
    train, val = _docs(corpus / "train.bin", hf_tok, eos), _docs(corpus / "val.bin", hf_tok, eos)
    assert len(train) > 100 and len(val) > 10
    assert not set(train) & set(val)


def test_tokenizer_offline_roundtrip(corpus, hf_tok, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(hf_tok, PreTrainedTokenizerFast)
    for s in ["Question: Where does Zol live?\nAnswer: Powick.", "12 + 7 = 19",
              "naïve café — 東京 ✓", "  two  spaces\tand tab\n\n"]:
        ids = hf_tok(s)["input_ids"]
        assert hf_tok.decode(ids) == s
        assert hf_tok.eos_token_id not in ids  # no bos/eos added
    assert [hf_tok.convert_tokens_to_ids(t) for t in (EOS, IM_START, IM_END)] == [0, 1, 2]
    msgs = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5"}]
    text = hf_tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
    prompt = hf_tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    cfg = json.loads((corpus / "tokenizer" / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == cfg["pad_token"] == cfg["bos_token"] == EOS


# --------------------------------------------------------------------------- sampler
def test_batch_sampler_deterministic_and_resumable(corpus):
    s1, s2 = BatchSampler.from_dir(corpus, seed=3), BatchSampler.from_dir(corpus, seed=3)
    full = [s1.train_batch(k, 4, 32) for k in range(10)]
    resumed = [s2.train_batch(k, 4, 32) for k in range(5, 10)]  # fresh sampler, resumed
    for (x, y), (rx, ry) in zip(full[5:], resumed):
        assert np.array_equal(x, rx) and np.array_equal(y, ry)
    x, y = full[0]
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    other = BatchSampler.from_dir(corpus, seed=4).train_batch(0, 4, 32)[0]
    assert not np.array_equal(other, x)
    # data-parallel: the global batch does not depend on how it is split over ranks
    glob = s1.train_batch(7, 8, 16)[0]
    parts = [s1.train_batch(7, 4, 16, rank=r, world_size=2)[0] for r in range(2)]
    assert np.array_equal(np.concatenate(parts), glob)


def test_eval_batches_contiguous(corpus):
    s = BatchSampler(None, open_split(corpus, "val"))
    val = TokenFile(corpus / "val.bin", "uint16")
    batches = list(s.eval_batches(8, 64))
    xs = np.concatenate([b[0] for b in batches])
    assert len(xs) == (len(val) - 1) // 64 == s.n_eval_windows(64)
    assert np.array_equal(xs.reshape(-1), np.asarray(val[: len(xs) * 64], dtype=np.int64))
    assert np.array_equal(np.concatenate([b[1] for b in batches]).reshape(-1),
                          np.asarray(val[1: len(xs) * 64 + 1], dtype=np.int64))
    assert len(list(s.eval_batches(8, 64, max_batches=2))) == 2
    assert all(b[0].shape[0] == 8 for b in s.eval_batches(8, 64, drop_last=True))
    again = list(s.eval_batches(8, 64))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))


# --------------------------------------------------------------------------- shards
ROWS = [f"Document {i}: " + " ".join(["the quick brown fox"] * (i % 5 + 1)) for i in range(60)]


def _write_shards(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    table = pa.table({"id": [f"<urn:{i}>" for i in range(40)], "text": ROWS[:40],
                      "url": ["http://x"] * 40, "score": [3.1] * 40})
    pq.write_table(table, root / "a" / "b" / "000.parquet", row_group_size=16)
    with gzip.open(root / "c" / "001.jsonl.gz", "wt") as fh:
        for i, t in enumerate(ROWS[40:]):
            fh.write(json.dumps({"id": i, "text": t, "score": 2.5}) + "\n")
    (root / "c" / "ignored.txt").write_text("not a shard")


def test_shards_tokenize(corpus, hf_tok, tmp_path):
    src = tmp_path / "src"
    _write_shards(src)
    meta = tokenize_text_shards(src, text_field="text", tokenizer=corpus / "tokenizer",
                                out_dir=tmp_path / "out", val_fraction=0.3, max_train_tokens=None, seed=0)
    assert meta["documents"]["train"] + meta["documents"]["val"] == len(ROWS)
    assert meta["documents"]["val"] > 5 and meta["source"]["n_files"] == 2
    expected = sum(len(hf_tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in ROWS)
    assert meta["tokens"]["train"] + meta["tokens"]["val"] == expected
    for split in ("train", "val"):
        assert (tmp_path / "out" / f"{split}.bin").stat().st_size == 2 * meta["tokens"][split]
    docs = _docs(tmp_path / "out" / "train.bin", hf_tok, hf_tok.eos_token_id) + \
        _docs(tmp_path / "out" / "val.bin", hf_tok, hf_tok.eos_token_id)
    assert sorted(docs) == sorted(ROWS)
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "out" / "tokenizer"))) == len(hf_tok)
    again = tokenize_text_shards(src, text_field="text", tokenizer=corpus / "tokenizer",
                                 out_dir=tmp_path / "out2", val_fraction=0.3, max_train_tokens=None, seed=0)
    assert again["sha256"] == meta["sha256"]
    capped = tokenize_text_shards(src, text_field="text", tokenizer=corpus / "tokenizer",
                                  out_dir=tmp_path / "out3", val_fraction=0.3, max_train_tokens=100, seed=0)
    assert capped["tokens"]["train"] == 100
    assert BatchSampler.from_dir(tmp_path / "out3").train_batch(0, 2, 16)[0].shape == (2, 16)


def test_shards_errors(corpus, tmp_path):
    src = tmp_path / "src"
    _write_shards(src)
    with pytest.raises(ShardError, match=r"000\.parquet.*'content'"):
        tokenize_text_shards(src, text_field="content", tokenizer=corpus / "tokenizer",
                             out_dir=tmp_path / "o", val_fraction=0.1, max_train_tokens=None, seed=0)
    only_jsonl = src / "c"
    with pytest.raises(ShardError, match=r"001\.jsonl\.gz:1.*'content'"):
        tokenize_text_shards(only_jsonl, text_field="content", tokenizer=corpus / "tokenizer",
                             out_dir=tmp_path / "o", val_fraction=0.1, max_train_tokens=None, seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ShardError, match=re.escape(str(empty))):
        tokenize_text_shards(empty, text_field="text", tokenizer=corpus / "tokenizer",
                             out_dir=tmp_path / "o", val_fraction=0.1, max_train_tokens=None, seed=0)


# --------------------------------------------------------------------------- SFT / MC
def _answers() -> dict[str, set[str]]:
    """question text -> correct answers, for every fact and arithmetic problem."""
    world = W.build_world()
    out: dict[str, set[str]] = {}
    for f in world.facts():
        key = "animal.colour" if (f.kind, f.relation) == ("animal", "colour") else f.relation
        for tpl in W.QUESTIONS[key]:
            out.setdefault(tpl.format(s=f.subject), set()).add(f.answer)
    return out


def _arith(q: str) -> str | None:
    m = re.fullmatch(r"What is (\d+) (plus|minus|times) (\d+)\?", q)
    if not m:
        return None
    a, op, b = int(m[1]), m[2], int(m[3])
    return str({"plus": a + b, "minus": a - b, "times": a * b}[op])


def test_sft_task(tmp_path):
    info = make_sft_task(tmp_path, n_train=300, n_eval=80, seed=0)
    train = json.loads((tmp_path / "sft_train.json").read_text())
    ev = json.loads((tmp_path / "sft_eval.json").read_text())
    assert len(train) == 300 and len(ev) == 80
    answers = _answers()
    for row in train + ev:
        assert set(row) == {"instruction", "input", "output"}
        assert row["output"] and " " not in row["output"]
        q = row["instruction"]
        assert row["output"] == _arith(q) or row["output"] in answers[q]
        if row["input"]:
            assert row["output"] in row["input"]
    closed_train = {r["instruction"] for r in train if not r["input"]}
    assert not {r["instruction"] for r in ev if not r["input"]} & closed_train
    dsi = json.loads((tmp_path / "dataset_info.json").read_text())
    for name in info["datasets"].values():
        assert (tmp_path / dsi[name]["file_name"]).is_file()
        assert dsi[name]["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}
    make_sft_task(tmp_path / "b", n_train=300, n_eval=80, seed=0)
    assert (tmp_path / "b" / "sft_train.json").read_bytes() == (tmp_path / "sft_train.json").read_bytes()


def test_multiple_choice_items(tmp_path):
    answers = _answers()
    for kind in MC_KINDS:
        rows = make_multiple_choice_items(kind, 120, seed=0)
        assert len(rows) == 120 and {r["kind"] for r in rows} == {kind}
        for r in rows:
            assert len(r["choices"]) == len(set(r["choices"])) == 4 and 0 <= r["gold"] < 4
            assert r["question"].endswith("\nAnswer:")
            q = r["question"].split("Question: ")[-1].removesuffix("\nAnswer:")
            gold = r["choices"][r["gold"]]
            assert gold == _arith(q) or gold in answers[q]
        assert make_multiple_choice_items(kind, 120, seed=0) == rows


def test_multiple_choice_choices_are_one_token_under_the_default_tokenizer(tmp_path):
    """Equal-length choices: every choice is one token (after lm-eval's " " delimiter)
    under the tokenizer the embedded default trains (its seed, vocab and corpus size)."""
    import yaml
    from transformers import AutoTokenizer

    from effbench.provenance import REPO_ROOT

    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    syn = cfg["data"]["pretrain"]["synthetic"]
    make_pretraining_corpus(tmp_path, seed=cfg["seed"], vocab_size=syn["vocab_size"],
                            train_tokens=syn["train_tokens"], val_tokens=syn["val_tokens"])
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"), local_files_only=True)
    lengths = {c: len(tok(" " + c, add_special_tokens=False)["input_ids"])
               for kind in MC_KINDS for r in make_multiple_choice_items(kind, 300, seed=0) for c in r["choices"]}
    assert {c: n for c, n in lengths.items() if n != 1} == {}


def test_uint32_token_file_and_no_torch(tmp_path):
    import subprocess
    import sys

    from effbench.data.tokens import BinWriter, dtype_for_vocab

    assert dtype_for_vocab(65535).name == "uint16" and dtype_for_vocab(65536).name == "uint32"
    with BinWriter(tmp_path / "t.bin", dtype_for_vocab(100_000)) as w:
        w.write(np.arange(99_990, 100_000))
    assert np.array_equal(TokenFile(tmp_path / "t.bin", "uint32")[:], np.arange(99_990, 100_000))
    with pytest.raises(ValueError), BinWriter(tmp_path / "u.bin", "uint16") as w:
        w.write([70_000])
    import os

    import effbench

    env = dict(os.environ, PYTHONPATH=str(Path(effbench.__file__).resolve().parents[1]))
    code = "import sys, effbench.data.tokens; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
