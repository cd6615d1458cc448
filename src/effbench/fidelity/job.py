"""What one fidelity job compares (the settings the rule passes): every served precision of one
model against the baseline precision, each with the engine settings its inference cells serve it
with. One job per model, so the baseline's distributions are extracted once, not once per
precision. Driver-side: no torch, no vLLM."""

from __future__ import annotations

from typing import Any

from ..inference.engines import ENGINE_KEYS
from .measures import THRESHOLDS

WINDOWS = 32  # held-out windows per checkpoint, each the model's context (vLLM: max_model_len - 1)


def engine_settings(serve: Any, model: str, precision: str) -> dict[str, Any]:
    """The engine settings the inference stage serves this model × precision with."""
    points = serve.serving_job(model, precision) or serve.serving_job(model, precision, open_loop=True)
    s = next(iter(points.values()))
    return {k: s[k] for k in ENGINE_KEYS}


def fidelity_job(serve: Any, model: str, threads: int) -> dict[str, Any]:
    """``precisions``: {precision: engine settings}, the baseline first; ``thresholds``: what each
    precision's verdict is judged against (docs/fidelity.md). The job is not timed: it
    scores on ``threads`` CPU threads (the eval jobs' share, so that it can run beside one) in place
    of the serving cell's; the engine, dtype and kernels are the serving cell's."""
    order = [serve.baseline] + [p for p in serve.precisions_of(model) if p != serve.baseline]
    return {"model": model, "baseline_precision": serve.baseline, "windows": WINDOWS, "window_len": None,
            "thresholds": dict(THRESHOLDS),
            "precisions": {p: {**engine_settings(serve, model, p), "threads": threads} for p in order}}


def fidelity_record(job: dict[str, Any], precision: str, settings: dict[str, Any], used: dict[str, Any],
                    figures: dict[str, Any], verdict: dict[str, Any], *, windows: int, window_len: int, held_out: str,
                    seconds: dict[str, float]) -> dict[str, Any]:
    """One precision's fidelity.json. ``engine`` is the engine that scored it (``used``, as the
    extraction reported it: ``{"engine", "engine_fallback"}``), not the configured one
    (``engine_configured``); ``engine_fallback`` says why they differ (one engine per model), or null."""
    base_p = job["baseline_precision"]
    return {
        "model": job["model"], "precision": precision, "baseline": base_p,
        "engine": used["engine"], "engine_configured": settings["engine"],
        "engine_fallback": used.get("engine_fallback"),
        "dtype": settings["dtype"], "baseline_dtype": job["precisions"][base_p]["dtype"],
        "device": settings["device"], "windows": int(windows), "window_len": int(window_len),
        "held_out": held_out,
        "extract_seconds": {"baseline": seconds[base_p],
                            "compare": None if precision == base_p else seconds[precision]},
        **figures,
        **verdict,
    }
