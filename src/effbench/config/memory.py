"""The memory check of the pretraining grid: every cell's predicted peak per GPU (the planner,
:mod:`effbench.plan`) against ``cluster.gpu_memory_gb``, before any job is submitted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..plan.fit import Verdict, check_cell
from .errors import ConfigError
from .pretrain import PretrainCell

# The knobs the pretraining stage implements today; the planner may also know others (ZeRO-2's
# optimizer+grads sharding, recompute), which it names as what would fit once the stage has them.
# Knob -> the values the stage runs (None: any).
STAGE_KNOBS = {"optimizer_sharding": ("none", "optimizer"), "expert_parallel": None, "micro_batch_size": None}


def vocab_size(config: dict[str, Any]) -> tuple[int | None, str]:
    """The vocabulary the pretraining models get, and where it came from (None: unknown here)."""
    d = config["data"]["pretrain"]
    if d["source"] == "synthetic":
        return int(d["synthetic"]["vocab_size"]), "data.pretrain.synthetic.vocab_size"
    shards = d["shards"]
    if shards.get("vocab_size"):
        return int(shards["vocab_size"]), "data.pretrain.shards.vocab_size"
    tok = Path(shards["tokenizer"]).expanduser() / "tokenizer.json"
    if tok.is_file():
        t = json.loads(tok.read_text())
        return len(t["model"]["vocab"]) + len(t.get("added_tokens", [])), str(tok)
    return None, f"set data.pretrain.shards.vocab_size ({tok} is not on this machine)"


def memory_verdicts(config: dict[str, Any], cells: list[PretrainCell]) -> list[Verdict]:
    """One verdict per pretraining cell (empty when no GPU size or vocabulary is known)."""
    allowed = (config.get("cluster") or {}).get("gpu_memory_gb")
    vocab, _ = vocab_size(config)
    if not allowed or vocab is None:
        return []
    return [check_cell(c.name, c.settings, vocab, allowed, knobs=STAGE_KNOBS) for c in cells]


def check_memory(config: dict[str, Any], cells: list[PretrainCell]) -> list[Verdict]:
    """The verdicts; ConfigError naming every cell that does not fit (and the key that would fix it)."""
    verdicts = memory_verdicts(config, cells)
    bad = [v for v in verdicts if not v.fits]
    if bad:
        raise ConfigError("config key `cluster.gpu_memory_gb`: predicted not to fit:\n  "
                          + "\n  ".join(v.message() for v in bad))
    return verdicts
