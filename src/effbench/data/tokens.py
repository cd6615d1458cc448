"""Token files: the on-disk layout shared by the synthetic corpus and the shard reader,
a memmap reader and a deterministic batch sampler. numpy only (no torch).

Layout of a prepared data directory::

    train.bin   raw little-endian token ids (uint16 if vocab < 65536 else uint32),
                documents separated by eos
    val.bin     same, held-out documents
    meta.json   see :func:`write_meta` / the keys listed in ``META_KEYS``
    tokenizer/  a Hugging Face tokenizer directory

Use :func:`load_meta` and :func:`open_split` rather than parsing meta.json by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
#: Keys every meta.json has (both the synthetic and the shard path write them).
META_KEYS = ("format_version", "generator", "generator_version", "seed", "vocab_size",
             "dtype", "eos_id", "pad_id", "tokens", "documents", "files", "sha256",
             "bytes", "tokenizer_dir", "source")
SPLITS = ("train", "val")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab < 65536), else uint32; always little-endian."""
    return np.dtype("<u2") if vocab_size < 2**16 else np.dtype("<u4")


def dtype_name(dtype: np.dtype | str) -> str:
    return np.dtype(dtype).name  # "uint16" / "uint32"


class BinWriter:
    """Append token arrays to a .bin file, counting tokens and hashing the bytes."""

    def __init__(self, path: Path, dtype: np.dtype | str):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.tokens = 0
        self._hash = hashlib.sha256()
        self._fh = open(self.path, "wb")

    def write(self, ids: np.ndarray | Iterable[int]) -> None:
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token id out of range for {self.dtype.name} in {self.path}")
        data = arr.astype(self.dtype, copy=False).tobytes()
        self._fh.write(data)
        self._hash.update(data)
        self.tokens += int(arr.size)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> BinWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_meta(out_dir: Path, meta: dict) -> Path:
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"meta.json is missing keys {missing}")
    path = Path(out_dir) / "meta.json"
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def load_meta(data_dir: Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"no meta.json in {data_dir}")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')!r}, "
                         f"this reader understands {FORMAT_VERSION}")
    return meta


class TokenFile:
    """Read-only memmap over a raw token file."""

    def __init__(self, path: Path | str, dtype: np.dtype | str):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        size = self.path.stat().st_size
        if size % self.dtype.itemsize:
            raise ValueError(f"{self.path}: {size} bytes is not a multiple of {self.dtype.itemsize}")
        n = size // self.dtype.itemsize
        # np.memmap cannot map an empty file
        self.tokens = (np.memmap(self.path, dtype=self.dtype, mode="r") if n
                       else np.zeros(0, dtype=self.dtype))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, idx):
        return self.tokens[idx]


def open_split(data_dir: Path | str, split: str) -> TokenFile:
    """The TokenFile for ``split`` ("train" or "val") of a prepared directory."""
    meta = load_meta(Path(data_dir))
    return TokenFile(Path(data_dir) / meta["files"][split], meta["dtype"])


class BatchSampler:
    """Deterministic batches over a training TokenFile and an optional validation one.

    ``train_batch(step, ...)`` depends only on (seed, step, batch_size, seq_length, rank,
    world_size), never on what was drawn before, so a run resumed at step k sees exactly
    the batches an uninterrupted run would. With ``world_size > 1`` the global batch of
    ``batch_size * world_size`` windows is drawn once and rank r takes its slice, so the
    global batch does not depend on how it is split across ranks.
    """

    def __init__(self, train: TokenFile | None, val: TokenFile | None = None, *, seed: int = 0):
        self.train = train
        self.val = val
        self.seed = int(seed)

    @classmethod
    def from_dir(cls, data_dir: Path | str, *, seed: int = 0) -> BatchSampler:
        return cls(open_split(data_dir, "train"), open_split(data_dir, "val"), seed=seed)

    def train_batch(self, step: int, batch_size: int, seq_length: int, *, rank: int = 0,
                    world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if self.train is None:
            raise ValueError("no training TokenFile")
        n = len(self.train)
        if n < seq_length + 1:
            raise ValueError(f"{self.train.path}: {n} tokens, need at least {seq_length + 1}")
        if step < 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad step/rank: step={step} rank={rank} world_size={world_size}")
        rng = np.random.default_rng([self.seed, int(step)])
        starts = rng.integers(0, n - seq_length, size=batch_size * world_size, dtype=np.int64)
        starts = starts[rank * batch_size:(rank + 1) * batch_size]
        return self._windows(self.train, starts, seq_length)

    def eval_batches(self, batch_size: int, seq_length: int, max_batches: int | None = None,
                     *, drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Contiguous non-overlapping windows of val.bin in order: window i has inputs
        tokens[i*s:(i+1)*s] and labels shifted by one. The last batch may be smaller
        unless ``drop_last``."""
        if self.val is None:
            raise ValueError("no validation TokenFile")
        n_windows = max(0, (len(self.val) - 1) // seq_length)
        starts = np.arange(n_windows, dtype=np.int64) * seq_length
        done = 0
        for i in range(0, n_windows, batch_size):
            if max_batches is not None and done >= max_batches:
                return
            chunk = starts[i:i + batch_size]
            if drop_last and len(chunk) < batch_size:
                return
            yield self._windows(self.val, chunk, seq_length)
            done += 1

    def n_eval_windows(self, seq_length: int) -> int:
        return 0 if self.val is None else max(0, (len(self.val) - 1) // seq_length)

    @staticmethod
    def _windows(tf: TokenFile, starts: np.ndarray, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
        idx = starts[:, None] + np.arange(seq_length + 1, dtype=np.int64)[None, :]
        block = np.asarray(tf.tokens[idx], dtype=np.int64)
        return block[:, :-1].copy(), block[:, 1:].copy()
