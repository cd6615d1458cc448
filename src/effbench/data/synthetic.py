"""Offline, deterministic pretraining corpus from the synthetic world.

``make_pretraining_corpus`` renders documents (see :mod:`effbench.data.world`), trains a
byte-level BPE tokenizer on training text only, saves it as a Hugging Face tokenizer
directory and writes ``train.bin`` / ``val.bin`` / ``meta.json`` (layout in
:mod:`effbench.data.tokens`). Same arguments, same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import world as W
from .tokens import FORMAT_VERSION, BinWriter, dtype_for_vocab, dtype_name, write_meta

GENERATOR = "effbench.data.synthetic"
GENERATOR_VERSION = f"1.0+world{W.GENERATOR_VERSION}"

EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOS, IM_START, IM_END]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_ENCODE_CHUNK = 4096  # documents per encode_batch call


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` (special tokens get ids 0, 1, 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level BPE "
                         f"(need > {256 + len(SPECIAL_TOKENS)})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def save_tokenizer_dir(tok, out: Path, *, model_max_length: int = 1_000_000) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json so that
    ``transformers.AutoTokenizer.from_pretrained(out)`` loads a PreTrainedTokenizerFast
    offline. Files are written with sorted keys (byte-stable)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                       "rstrip": False, "single_word": False, "special": True}
             for t in SPECIAL_TOKENS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS, "eos_token": EOS, "pad_token": EOS, "unk_token": None,
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "additional_special_tokens": [IM_START, IM_END],
        "added_tokens_decoder": added,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "right",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special_map = {"bos_token": EOS, "eos_token": EOS, "pad_token": EOS,
                   "additional_special_tokens": [IM_START, IM_END]}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, sort_keys=True) + "\n")
    return out


def _doc_key(doc: str) -> bytes:
    return hashlib.blake2b(doc.encode(), digest_size=16).digest()


def _write_split(tok, docs: Iterator[str], writer: BinWriter, n_tokens: int, eos_id: int,
                 exclude: set[bytes] | None, keep: set[bytes] | None) -> tuple[int, int]:
    """Encode documents from ``docs`` (each followed by eos) until ``n_tokens`` are written;
    the last document is cut to fit. Documents whose key is in ``exclude`` are skipped;
    keys of written documents are added to ``keep``. Returns (documents written, skipped)."""
    used = skipped = 0
    while writer.tokens < n_tokens:
        batch, keys = [], []
        while len(batch) < _ENCODE_CHUNK:
            d = next(docs)
            k = _doc_key(d)
            if exclude is not None and k in exclude:
                skipped += 1
                continue
            batch.append(d)
            keys.append(k)
        for enc, k in zip(tok.encode_batch(batch, add_special_tokens=False), keys):
            room = n_tokens - writer.tokens
            ids = enc.ids
            ids.append(eos_id)
            writer.write(np.asarray(ids[:room], dtype=np.int64))
            used += 1
            if keep is not None:
                keep.add(k)
            if writer.tokens >= n_tokens:
                break
    return used, skipped


def make_pretraining_corpus(out_dir: Path, *, vocab_size: int, train_tokens: int,
                            val_tokens: int, seed: int,
                            world_seed: int = W.DEFAULT_WORLD_SEED) -> dict:
    """Write ``out_dir/{train.bin,val.bin,meta.json,tokenizer/}``; return the meta dict.

    ``seed`` picks the sampled documents; ``world_seed`` the entities and facts (kept
    fixed by default so that every corpus, SFT task and eval talks about one world).
    The tokenizer is trained on the leading training documents (at most as many bytes as
    ``train_tokens``, so all of them end up in train.bin); validation documents come
    from a separate stream and any that equal a training document are skipped.
    """
    if train_tokens <= 0 or val_tokens <= 0:
        raise ValueError("train_tokens and val_tokens must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = W.build_world(world_seed)

    # tokenizer: the first training documents, no more bytes than train_tokens
    budget = min(train_tokens, 64_000_000)
    tok_docs, size = [], 0
    for d in W.iter_documents(world, seed, "train"):
        size += len(d.encode()) + 1
        if size > budget and tok_docs:
            break
        tok_docs.append(d)
    tok = train_bpe_tokenizer(tok_docs, vocab_size)
    save_tokenizer_dir(tok, out_dir / "tokenizer")
    eos_id = tok.token_to_id(EOS)
    actual_vocab = tok.get_vocab_size()
    dtype = dtype_for_vocab(actual_vocab)

    train_keys: set[bytes] = set()
    with BinWriter(out_dir / "train.bin", dtype) as wt:
        n_train_docs, _ = _write_split(tok, W.iter_documents(world, seed, "train"), wt,
                                       train_tokens, eos_id, None, train_keys)
    with BinWriter(out_dir / "val.bin", dtype) as wv:
        n_val_docs, n_dup = _write_split(tok, W.iter_documents(world, seed, "val"), wv,
                                         val_tokens, eos_id, train_keys, None)

    tok_files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted((out_dir / "tokenizer").iterdir())}
    meta = {
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "vocab_size": actual_vocab,
        "requested_vocab_size": vocab_size,
        "dtype": dtype_name(dtype),
        "eos_id": eos_id,
        "pad_id": eos_id,
        "bos_id": eos_id,
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
        "tokens": {"train": wt.tokens, "val": wv.tokens},
        "documents": {"train": n_train_docs, "val": n_val_docs},
        "files": {"train": "train.bin", "val": "val.bin"},
        "sha256": {"train": wt.sha256, "val": wv.sha256},
        "bytes": {"train": wt.tokens * dtype.itemsize, "val": wv.tokens * dtype.itemsize},
        "tokenizer_dir": "tokenizer",
        "tokenizer_sha256": tok_files,
        "source": {"kind": "synthetic", "world_seed": world_seed,
                   "world_generator": W.GENERATOR_NAME,
                   "world_generator_version": W.GENERATOR_VERSION,
                   "tokenizer_train_documents": len(tok_docs),
                   "val_documents_skipped_as_train_duplicates": n_dup},
    }
    write_meta(out_dir, meta)
    return meta
