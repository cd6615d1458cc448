"""A temporary Hugging Face cache with tiny stand-ins for models and datasets, in the hub's own
layout (``models--org--name/{blobs,refs/main,snapshots/<rev>/...}``, snapshot files linked to
blobs), so that ``huggingface_hub.try_to_load_from_cache`` and ``scan_cache_dir`` find them.

The weights are placeholders (a few bytes named ``model.safetensors``): what preflight checks is
that the files a stage reads are present, not their contents. config.json carries the model's
published shape, which the memory, run-time and disk predictions read. Data files are real
(three JSON lines).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Published shapes (config.json) of the paper's models: hidden, layers, heads, KV heads, FFN,
# vocabulary, tied embeddings, head dim where it is not hidden / heads.
SHAPES = {
    "meta-llama/Llama-3.2-1B": (2048, 16, 32, 8, 8192, 128256, True, None),
    "meta-llama/Llama-3.2-3B": (3072, 28, 24, 8, 8192, 128256, True, None),
    "meta-llama/Llama-3.1-8B": (4096, 32, 32, 8, 14336, 128256, False, None),
    "Qwen/Qwen2.5-7B": (3584, 28, 28, 4, 18944, 152064, False, None),
    "Qwen/Qwen2.5-14B": (5120, 48, 40, 8, 13824, 152064, False, None),
    "Qwen/Qwen2.5-32B": (5120, 64, 40, 8, 27648, 152064, False, None),
    "mistralai/Mistral-7B-v0.3": (4096, 32, 32, 8, 14336, 32768, False, None),
    "mistralai/Mistral-Small-24B-Base-2501": (5120, 40, 32, 8, 32768, 131072, False, 128),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": (1536, 28, 12, 2, 8960, 151936, False, None),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": (4096, 32, 32, 8, 14336, 128256, False, None),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": (5120, 48, 40, 8, 13824, 152064, False, None),
    "microsoft/Phi-3.5-mini-instruct": (3072, 32, 32, 32, 8192, 32064, False, None),
    "microsoft/phi-4": (5120, 40, 40, 10, 17920, 100352, False, None),
    "01-ai/Yi-34B": (7168, 60, 56, 8, 20480, 64000, False, None),
}


def hf_config(repo_id: str) -> dict:
    H, L, n, g, F, V, tie, d = SHAPES[repo_id]
    c = {"hidden_size": H, "num_hidden_layers": L, "num_attention_heads": n, "num_key_value_heads": g,
         "intermediate_size": F, "vocab_size": V, "tie_word_embeddings": tie}
    if d:
        c["head_dim"] = d
    return c


def _put(repo: Path, files: dict[str, bytes]) -> None:
    rev = hashlib.sha1(repo.name.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)


def add_model(hub: Path, repo_id: str) -> None:
    _put(hub / f"models--{repo_id.replace('/', '--')}", {
        "config.json": json.dumps(hf_config(repo_id)).encode(),
        "tokenizer_config.json": b"{}",
        "tokenizer.json": b"{}",
        "model.safetensors": b"placeholder",
    })


def add_dataset(hub: Path, repo_id: str) -> None:
    rows = "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3))
    _put(hub / f"datasets--{repo_id.replace('/', '--')}", {"data/train.jsonl": rows.encode()})
