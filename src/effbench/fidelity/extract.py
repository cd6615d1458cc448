"""Held-out windows and the per-position next-token log-distributions an engine gives them.

The windows are evenly spaced, non-overlapping slices of the pretraining corpus' validation
split (deterministic: the same for every precision). For a window ``w`` of ``L`` tokens an
extractor returns ``[L - 1, vocab]`` log-probabilities: row ``i`` is the distribution of
token ``w[i + 1]`` given ``w[:i + 1]`` (teacher forcing), over the whole vocabulary.

- vLLM: ``prompt_logprobs`` with ``k`` = the vocabulary size (``max_logprobs`` raised to
  match), so the engine that serves scores the text with its own kernels (int4: the
  compressed-tensors weight-only path).
- transformers (the inference stage's fallback engine): one forward pass per batch.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tokens import open_split

log = logging.getLogger("effbench.fidelity")
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def held_out_windows(data_dir: Path | str, n: int, length: int) -> np.ndarray:
    """``n`` evenly spaced, non-overlapping windows of ``length`` tokens from the validation split."""
    tokens = open_split(data_dir, "val")
    if n * length > len(tokens):
        raise ValueError(f"{n} windows of {length} tokens need {n * length} held-out tokens, "
                         f"the validation split has {len(tokens)}")
    stride = len(tokens) // n
    return np.stack([np.asarray(tokens[i * stride:i * stride + length], dtype=np.int64) for i in range(n)])


def vllm_logprobs(model_dir: Path, windows: np.ndarray, settings: dict[str, Any], device: str) -> np.ndarray:
    """``[n, L - 1, vocab]`` float32 log-probabilities from vLLM's prompt logprobs."""
    vllm_cfg = settings["vllm"]
    if device == "cpu":  # the CPU build's KV cache is host memory; set before vLLM is imported
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(vllm_cfg["cpu_kvcache_gb"]))))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        os.environ.setdefault("OMP_NUM_THREADS", str(settings["threads"]))
    from ..inference.engines import single_process

    single = single_process(vllm_cfg)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    vocab = _config_vocab(model_dir)
    kwargs: dict[str, Any] = dict(
        model=str(model_dir), tokenizer=str(model_dir), dtype=TORCH_DTYPES[settings["dtype"]], seed=settings["seed"],
        max_model_len=vllm_cfg["max_model_len"], enforce_eager=vllm_cfg["enforce_eager"] or device == "cpu",
        max_logprobs=vocab, disable_log_stats=True, **({"distributed_executor_backend": "uni"} if single else {}))
    if device == "cuda":
        kwargs["gpu_memory_utilization"] = vllm_cfg["gpu_memory_utilization"]
    llm = LLM(**kwargs)
    try:
        # flat_logprobs: vLLM keeps each request's logprobs in flat lists, not one Logprob object per
        # (position, token): 4 M objects for 32 windows × 127 positions × 1024 tokens otherwise.
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=vocab, detokenize=False,
                                flat_logprobs=True)
        outs = llm.generate([TokensPrompt(prompt_token_ids=[int(t) for t in w]) for w in windows], params,
                            use_tqdm=False)
    finally:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the process exits next
            pass
    out = np.full((len(windows), windows.shape[1] - 1, vocab), -np.inf, dtype=np.float32)
    for i, o in enumerate(outs):
        fill_positions(out[i], o.prompt_logprobs, windows.shape[1])
    return out


def fill_positions(out: np.ndarray, prompt_logprobs: Any, window: int) -> None:
    """Write one window's prompt logprobs (vLLM's ``FlatLogprobs``: flat token ids and values with
    per-position start/end indices; the first prompt token has none) into ``out[L - 1, vocab]``.
    Each position lists the prompt's own token and then the top ``vocab``: the token appears
    twice with one value, so the assignment is unambiguous."""
    starts, ends = np.asarray(prompt_logprobs.start_indices), np.asarray(prompt_logprobs.end_indices)
    if len(starts) != window:
        raise RuntimeError(f"vLLM returned {len(starts)} prompt positions for a window of {window}")
    starts, ends = starts[1:], ends[1:]
    first = int(starts[0]) if len(starts) else 0
    ids = np.asarray(prompt_logprobs.token_ids[first:], dtype=np.int64)
    values = np.asarray(prompt_logprobs.logprobs[first:], dtype=np.float32)
    rows = np.repeat(np.arange(len(starts)), ends - starts)
    if len(rows) != len(ids):
        raise RuntimeError("vLLM's flat prompt logprobs are not contiguous per position")
    out[rows, ids] = values


def load_transformers(model_dir: Path, dtype: str, device: str):  # type: ignore[no-untyped-def]
    """The checkpoint as the transformers engine loads it (int4: compressed-tensors decompresses)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, TORCH_DTYPES[dtype])
                                                ).to(device).eval()


def forward_logprobs(model, windows: np.ndarray, device: str, batch: int = 8) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``[n, L - 1, vocab]`` float32 log-probabilities from forward passes of a loaded model."""
    import torch

    parts = []
    with torch.inference_mode():
        for s in range(0, len(windows), batch):
            ids = torch.as_tensor(windows[s:s + batch], device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            parts.append(torch.log_softmax(logits, dim=-1).cpu().numpy())
    return np.concatenate(parts)


def transformers_logprobs(model_dir: Path, windows: np.ndarray, settings: dict[str, Any], device: str
                          ) -> np.ndarray:
    import torch

    if device == "cpu":
        torch.set_num_threads(settings["threads"])
    return forward_logprobs(load_transformers(model_dir, settings["dtype"], device), windows, device)


def _config_vocab(model_dir: Path) -> int:
    return int(json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"])


def logprobs_and_engine(model_dir: Path, windows: np.ndarray, settings: dict[str, Any], device: str,
                        model_dirs: dict[str, Path] | None = None) -> tuple[np.ndarray, str, str | None]:
    """(the log-distributions, the engine that gave them, why it is not ``settings["engine"]`` or
    None), from the engine the inference stage serves the model with: one engine per model,
    decided over ``model_dirs`` (every precision's checkpoint; default this one), as it serves."""
    from ..inference.engine_choice import model_engine

    engine, why = model_engine(settings, model_dirs or {"this": Path(model_dir)}, device)
    if why:
        log.warning("fidelity: %s", why)
    log.info("fidelity: %s on %s (%s, %s): %d windows of %d tokens", model_dir, engine, settings["dtype"], device,
             *windows.shape)
    if engine == "vllm":
        return vllm_logprobs(model_dir, windows, settings, device), engine, why
    if engine == "transformers":
        return transformers_logprobs(model_dir, windows, settings, device), engine, why
    raise ValueError(f"unknown engine {engine!r}")


def logprobs(model_dir: Path, windows: np.ndarray, settings: dict[str, Any], device: str,
             model_dirs: dict[str, Path] | None = None) -> np.ndarray:
    """The log-distributions alone (:func:`logprobs_and_engine`)."""
    return logprobs_and_engine(model_dir, windows, settings, device, model_dirs)[0]
