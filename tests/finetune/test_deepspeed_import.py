"""DeepSpeed in the fine-tuning environment: full fine-tuning cells name a DeepSpeed config
(config/paper.yaml: `finetune.methods.full.deepspeed`), so `import deepspeed` must work there,
at the lock's version, and LlamaFactory and transformers must see it."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lock_pin(name: str) -> str:
    for line in (ROOT / "envs" / "finetune.lock.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in envs/finetune.lock.txt")


def test_deepspeed_imports_at_the_locked_version() -> None:
    import deepspeed

    assert deepspeed.__version__ == _lock_pin("deepspeed") == importlib.metadata.version("deepspeed")


def test_llamafactory_and_transformers_accept_it() -> None:
    from llamafactory.extras.misc import check_version
    from transformers.integrations import is_deepspeed_available

    check_version("deepspeed", mandatory=True)  # what LlamaFactory's parser calls for a DeepSpeed cell
    assert is_deepspeed_available()


def test_the_papers_zero3_offload_config_is_read_by_transformers() -> None:
    from transformers.integrations import HfDeepSpeedConfig

    ds = HfDeepSpeedConfig(json.loads((ROOT / "config" / "deepspeed" / "ds_z3_offload.json").read_text()))
    assert ds.is_zero3() and ds.is_offload()
