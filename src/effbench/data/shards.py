"""The cluster path: tokenize FineWeb-Edu-style text shards into train.bin / val.bin.

Shards are ``*.parquet``, ``*.jsonl`` and ``*.jsonl.gz`` files found recursively under a
directory (or a single such file), read in sorted path order and streamed (parquet via
``pyarrow.parquet.ParquetFile.iter_batches``, jsonl line by line), so memory stays flat.
Each document goes to val when a hash of (seed, document index) falls below
``val_fraction``. Output layout as in :mod:`effbench.data.tokens`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .tokens import FORMAT_VERSION, BinWriter, dtype_for_vocab, dtype_name, write_meta

GENERATOR = "effbench.data.shards"
GENERATOR_VERSION = "1.0"
SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
_BATCH_DOCS = 1024


class ShardError(ValueError):
    """A problem with the input shards (no shards, missing text field, bad row)."""


def find_shards(path: Path) -> list[Path]:
    path = Path(path)
    if not path.exists():
        raise ShardError(f"shard path {path} does not exist")
    if path.is_file():
        files = [path] if path.name.endswith(SHARD_SUFFIXES) else []
    else:
        files = sorted((p for p in path.rglob("*") if p.is_file() and p.name.endswith(SHARD_SUFFIXES)),
                       key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise ShardError(f"no shards (*.parquet, *.jsonl, *.jsonl.gz) under {path}")
    return files


def _iter_parquet(path: Path, text_field: str) -> Iterator[str | None]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ShardError(f"{path}: no text field {text_field!r} (columns: {', '.join(names)})")
    for batch in pf.iter_batches(batch_size=_BATCH_DOCS, columns=[text_field]):
        yield from batch.column(0).to_pylist()


def _iter_jsonl(path: Path, text_field: str) -> Iterator[str | None]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ShardError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(row, dict) or text_field not in row:
                keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise ShardError(f"{path}:{lineno}: no text field {text_field!r} (fields: {keys})")
            yield row[text_field]


def check_shard(path: Path, text_field: str) -> None:
    """Fail early, naming the file, when a shard lacks ``text_field`` (parquet: schema;
    jsonl: first row)."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if text_field not in names:
            raise ShardError(f"{path}: no text field {text_field!r} (columns: {', '.join(names)})")
        return
    for _ in _iter_jsonl(path, text_field):
        return


def iter_documents(files: list[Path], text_field: str) -> Iterator[str | None]:
    for f in files:
        yield from (_iter_parquet(f, text_field) if f.name.endswith(".parquet")
                    else _iter_jsonl(f, text_field))


def is_val(doc_index: int, seed: int, val_fraction: float) -> bool:
    """Deterministic split of document ``doc_index`` (independent of Python's hash seed)."""
    h = hashlib.blake2b(f"{seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < val_fraction


def load_tokenizer(tokenizer: str | Path):
    """AutoTokenizer from a local directory, or a Hub id already in the local cache."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError variants
        raise ShardError(f"cannot load tokenizer {tokenizer!r} offline "
                         f"(a local directory or a Hub id already cached): {e}") from e


def tokenize_text_shards(path: Path, *, text_field: str = "text", tokenizer: str | Path,
                         out_dir: Path, val_fraction: float = 0.005,
                         max_train_tokens: int | None = None, seed: int = 0) -> dict:
    """Tokenize every document under ``path`` into ``out_dir``; return the meta dict.

    Documents are encoded without special tokens and each is followed by eos. Empty or
    null texts are skipped (counted in meta). With ``max_train_tokens`` reading stops
    once train.bin holds that many tokens (the last document is cut), so val.bin then
    holds the val documents met so far.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    path, out_dir = Path(path), Path(out_dir)
    files = find_shards(path)
    for f in files:
        check_shard(f, text_field)
    tok = load_tokenizer(tokenizer)
    eos_id = tok.eos_token_id
    if eos_id is None:
        raise ShardError(f"tokenizer {tokenizer!r} has no eos token to separate documents")
    vocab_size = len(tok)
    dtype = dtype_for_vocab(vocab_size)
    backend = getattr(tok, "backend_tokenizer", None)  # fast path: tokenizers.encode_batch
    out_dir.mkdir(parents=True, exist_ok=True)

    def encode(texts: list[str]) -> list[list[int]]:
        if backend is not None:
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        return tok(texts, add_special_tokens=False)["input_ids"]

    n_docs = {"train": 0, "val": 0}
    skipped = 0
    limit = max_train_tokens if max_train_tokens is not None else None
    with BinWriter(out_dir / "train.bin", dtype) as wt, BinWriter(out_dir / "val.bin", dtype) as wv:
        writers = {"train": wt, "val": wv}

        def flush(batch: list[tuple[str, str]]) -> bool:
            """Write a batch; True when the train limit is reached."""
            for (split, _), ids in zip(batch, encode([t for _, t in batch])):
                ids.append(eos_id)
                arr = np.asarray(ids, dtype=np.int64)
                if split == "train" and limit is not None:
                    arr = arr[:limit - wt.tokens]
                writers[split].write(arr)
                n_docs[split] += 1
                if limit is not None and wt.tokens >= limit:
                    return True
            return False

        batch: list[tuple[str, str]] = []
        done = limit is not None and limit <= 0
        for i, text in enumerate(iter_documents(files, text_field)):
            if done:
                break
            if not isinstance(text, str) or not text:
                skipped += 1
                continue
            batch.append(("val" if is_val(i, seed, val_fraction) else "train", text))
            if len(batch) >= _BATCH_DOCS:
                done = flush(batch)
                batch = []
        if batch and not done:
            flush(batch)

    tok_dir = out_dir / "tokenizer"
    tok.save_pretrained(str(tok_dir))
    meta = {
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "vocab_size": vocab_size,
        "dtype": dtype_name(dtype),
        "eos_id": int(eos_id),
        "pad_id": int(tok.pad_token_id) if tok.pad_token_id is not None else int(eos_id),
        "tokens": {"train": wt.tokens, "val": wv.tokens},
        "documents": dict(n_docs),
        "files": {"train": "train.bin", "val": "val.bin"},
        "sha256": {"train": wt.sha256, "val": wv.sha256},
        "bytes": {"train": wt.tokens * dtype.itemsize, "val": wv.tokens * dtype.itemsize},
        "tokenizer_dir": "tokenizer",
        "source": {"kind": "shards", "path": str(path), "text_field": text_field,
                   "tokenizer": str(tokenizer), "val_fraction": val_fraction,
                   "max_train_tokens": max_train_tokens, "n_files": len(files),
                   "files": [f.relative_to(path).as_posix() if f != path else f.name for f in files],
                   "skipped_empty_documents": skipped},
    }
    write_meta(out_dir, meta)
    return meta
