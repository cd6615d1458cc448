"""Input paths the config reads from outside the pipeline, and which of them are missing here."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _deepspeed_paths(ft: dict[str, Any]) -> list[tuple[str, str]]:
    places = [("finetune.training", ft["training"])]
    places += [(f"finetune.methods.{n}", m) for n, m in ft["methods"].items()]
    for n, m in ft["models"].items():
        places.append((f"finetune.models.{n}.training", m["training"]))
        places += [(f"finetune.models.{n}.overrides.{k}", o) for k, o in m["overrides"].items()]
    return [(f"{where}.deepspeed", t["deepspeed"]) for where, t in places if t.get("deepspeed")]


def tokenizer_is_path(tok: str) -> bool:
    """Whether ``data.pretrain.shards.tokenizer`` names a folder (else a cached Hugging Face id)."""
    return tok.startswith((".", "/", "~")) or Path(tok).expanduser().exists()


def data_paths(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(config key, path) of every input the (validated) config reads from outside the pipeline."""
    d = config["data"]["pretrain"]
    out = []
    ft = config.get("finetune")
    if ft:
        out += [(f"finetune.models.{n}.path", m["path"]) for n, m in ft["models"].items() if "path" in m]
        out += [(f"finetune.tasks.{n}.path", t["path"]) for n, t in ft["tasks"].items() if t["source"] == "local"]
        out += _deepspeed_paths(ft)
    if d["source"] == "shards":
        out.append(("data.pretrain.shards.path", d["shards"]["path"]))
        tok = d["shards"]["tokenizer"]
        if tokenizer_is_path(tok):
            out.append(("data.pretrain.shards.tokenizer", tok))
    for name, ref in (config.get("quantize") or {}).get("models", {}).items():
        if "path" in ref:
            out.append((f"quantize.models.{name}.path", ref["path"]))
    return out


def missing_paths(config: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, p) for k, p in data_paths(config) if not Path(p).expanduser().exists()]
