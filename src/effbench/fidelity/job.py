"""What one fidelity job compares (the settings the rule passes): a model × precision and the
baseline precision, each with the engine settings its inference cells serve it with. Driver-side:
no torch, no vLLM."""

from __future__ import annotations

from typing import Any

from ..inference.engines import ENGINE_KEYS

WINDOWS = 32  # held-out windows per checkpoint, each the model's context (vLLM: max_model_len - 1)


def engine_settings(serve: Any, model: str, precision: str) -> dict[str, Any]:
    """The engine settings the inference stage serves this model × precision with."""
    s = next(iter(serve.serving_job(model, precision).values()))
    return {k: s[k] for k in ENGINE_KEYS}


def fidelity_job(serve: Any, model: str, precision: str) -> dict[str, Any]:
    return {"model": model, "precision": precision, "baseline_precision": serve.baseline, "windows": WINDOWS,
            "window_len": None, "compare": engine_settings(serve, model, precision),
            "baseline": engine_settings(serve, model, serve.baseline)}
