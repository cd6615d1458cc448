"""Which files a stage reads from a model or dataset reference, checked through any lookup
(the Hugging Face hub cache inside a stage's interpreter, or a folder on disk).

Stdlib only: :mod:`probe` imports it inside the stage environments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

# A lookup: a file name inside the reference -> its local path, or None when absent.
Lookup = Callable[[str], "str | None"]

# Each entry: alternatives, one of which must exist. transformers reads config.json; a
# tokenizer is its tokenizer_config.json plus a fast (tokenizer.json) or sentencepiece
# (tokenizer.model) vocabulary.
MODEL_FILES: tuple[tuple[str, ...], ...] = (
    ("config.json",),
    ("tokenizer_config.json",),
    ("tokenizer.json", "tokenizer.model"),
)
TOKENIZER_FILES = MODEL_FILES[1:]
WEIGHTS_INDEX = "model.safetensors.index.json"
WEIGHTS_SINGLE = "model.safetensors"
DATA_SUFFIXES = (".parquet", ".json", ".jsonl", ".csv", ".arrow", ".txt", ".json.gz", ".jsonl.gz", ".jsonl.zst")


def _alternatives(groups: tuple[tuple[str, ...], ...], lookup: Lookup) -> tuple[dict[str, str], list[str]]:
    found, missing = {}, []
    for names in groups:
        hit = next(((n, p) for n in names if (p := lookup(n))), None)
        if hit:
            found[hit[0]] = hit[1]
        else:
            missing.append(" or ".join(names))
    return found, missing


def weight_files(lookup: Lookup) -> tuple[dict[str, str], list[str]]:
    """The safetensors weights: every shard the index names, or the single file."""
    index = lookup(WEIGHTS_INDEX)
    if not index:
        single = lookup(WEIGHTS_SINGLE)
        return ({WEIGHTS_SINGLE: single}, []) if single else ({}, [f"{WEIGHTS_SINGLE} or {WEIGHTS_INDEX}"])
    try:
        shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError) as e:
        return {}, [f"{WEIGHTS_INDEX} unreadable ({type(e).__name__}: {e})"]
    found, missing = {WEIGHTS_INDEX: index}, []
    for s in shards:
        p = lookup(s)
        if p:
            found[s] = p
        else:
            missing.append(s)
    return found, missing


def model_files(lookup: Lookup, weights: bool = True) -> dict[str, object]:
    """{"found": {name: path}, "missing": [what is absent]} for a model (or a tokenizer alone)."""
    found, missing = _alternatives(MODEL_FILES if weights else TOKENIZER_FILES, lookup)
    if weights:
        f, m = weight_files(lookup)
        found.update(f)
        missing += m
    return {"found": found, "missing": missing}


def folder_lookup(folder: str | Path) -> Lookup:
    root = Path(folder).expanduser()
    return lambda name: str(root / name) if (root / name).is_file() else None


def data_files(folder: str | Path) -> list[str]:
    """Data files under a folder (or the file itself), as a dataset loader would read them."""
    root = Path(folder).expanduser()
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.name.endswith(DATA_SUFFIXES))
