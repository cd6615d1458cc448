"""Fixtures for the fine-tuning tests (LlamaFactory, CPU): a tiny Llama and a task folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("llamafactory")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_tiny_llama(out: Path, texts: list[str], *, hidden: int = 64, layers: int = 2, ffn: int = 128,
                    vocab: int = 512) -> Path:
    """A randomly initialised Llama with a byte-level BPE trained on ``texts`` (offline)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from effbench.data.synthetic import save_tokenizer_dir, train_bpe_tokenizer

    tok = train_bpe_tokenizer(texts, vocab)
    save_tokenizer_dir(tok, out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=ffn,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    from effbench.finetune.tasks import prepare_task

    out = tmp_path_factory.mktemp("task")
    prepare_task("synthetic", {"source": "synthetic", "synthetic": {"n_train": 48, "n_eval": 16}}, out, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, task_dir) -> Path:
    rows = json.loads((task_dir / "sft_train.json").read_text())
    texts = [f"{r['instruction']} {r['input']} {r['output']}" for r in rows] * 4
    return make_tiny_llama(tmp_path_factory.mktemp("model"), texts)
