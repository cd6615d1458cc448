"""The local Hugging Face cache, read the way huggingface_hub reads it, with the standard library
only (the driver environment has no huggingface_hub): where the hub cache is, whether a model id
has a snapshot there with the files a stage loads, and whether the run is offline.

Layout: ``<hub cache>/models--<org>--<name>/refs/main`` names the snapshot that an offline
``from_pretrained(<id>)`` (revision ``main``) loads, ``snapshots/<revision>/<file>``. The hub
cache is ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..preflight.files import folder_lookup, model_files  # stdlib only

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of a boolean variable


def hub_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def offline_by(env: Mapping[str, str] | None = None) -> str | None:
    """The variable that puts Hugging Face offline (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE), or None."""
    env = os.environ if env is None else env
    return next((v for v in OFFLINE_VARS if env.get(v, "").strip().upper() in _TRUE), None)


def snapshot(repo_id: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The snapshot folder ``refs/main`` names for a model id, where it exists."""
    repo = hub_dir(env) / f"models--{repo_id.replace('/', '--')}"
    try:
        rev = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snap = repo / "snapshots" / rev
    return snap if rev and snap.is_dir() else None


def cached_files(repo_id: str, weights: bool = True, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """{"found": {file: path}, "missing": [what is absent]} for a model id (``weights=False``: a
    tokenizer) in the local cache: every file a stage loads (preflight.files), or the snapshot."""
    snap = snapshot(repo_id, env)
    if snap is None:
        return {"found": {}, "missing": [f"models--{repo_id.replace('/', '--')}/refs/main and its snapshot"]}
    return model_files(folder_lookup(snap), weights=weights)


def missing_files(repo_id: str, weights: bool = True, env: Mapping[str, str] | None = None) -> list[str]:
    """What :func:`cached_files` finds absent; empty when the id is all there."""
    return list(cached_files(repo_id, weights, env)["missing"])


def cached_config(repo_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """config.json of a model id in the local cache (None when absent or unreadable)."""
    snap = snapshot(repo_id, env)
    return _json(snap / "config.json") if snap else None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def local_config(kind: str, ref: str) -> dict[str, Any] | None:
    """config.json of a model reference that is not the pipeline's own (``hf``: the cache's
    snapshot; ``path``: the folder's), where this machine has it."""
    if kind == "hf":
        return cached_config(ref)
    if kind == "path":
        return _json(Path(ref).expanduser() / "config.json")
    return None
