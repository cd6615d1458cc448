"""Serve the load points of one model × precision and return each point's record values.

One engine load serves every point of a job (the load dominates a point's run: 15-35 s for a
tiny model on a CPU, minutes for a 30B model on a GPU): a model × precision's closed-loop points
are one job, its open-loop points another (workflow/rules/inference.smk); each point is its
own cell with its own record. Per point: warm-up requests (not measured), then ``repeats``
measured runs (more while ``min_seconds`` is not reached) inside one monitor window: AMU,
AEC and energy come from that window, IT from Σ tokens / Σ run time, latencies from the
requests' client-side traces (:mod:`.latency`). Prompts are fixed-length random token ids
(seeded), as in vLLM's random-dataset benchmark; outputs have a fixed length.

Load modes: ``offline`` (all requests at once) and ``concurrency`` (N in flight) are closed
loops; ``rate`` is an open loop: requests arrive at ``rate`` requests/s (``arrivals``: poisson
or constant, :mod:`.arrivals`, drawn anew per repeat), at most ``concurrency`` in flight.
Every mode reports the achieved request throughput and, under the point's ``slo``, goodput
(:mod:`.goodput`), each request's queue / prefill / decode split (:mod:`.phases`), and the
energy of the engine's prefill and decode steps (``effbench.measure.phase_energy``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from ..measure.monitor import ENERGY_FLAGS, Monitor
from ..progress import Progress
from ..record import SIDE_CAR, WINDOW_FIGURES  # written by the quantize stage beside the weights
from .arrivals import arrival_offsets, seed_tag
from .goodput import goodput_figures, repeat_counts, repeat_origin
from .latency import latency_figures, throughput_figures
from .memory import kv_budget, memory_figures
from .phases import StepLog, energy_reader_of, monitor_energy_figures, phase_figures

log = logging.getLogger("effbench.inference")


def model_info(model_dir: Path) -> dict[str, Any]:
    p = Path(model_dir) / SIDE_CAR
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: the model directory was not made by the quantize stage")
    return json.loads(p.read_text())


def make_prompts(n: int, length: int, vocab_size: int, special_ids: set[int], seed: int, tag: str) -> list[list[int]]:
    rng = random.Random(f"prompts:{seed}:{tag}")
    allowed = [i for i in range(vocab_size) if i not in special_ids]
    return [[rng.choice(allowed) for _ in range(length)] for _ in range(n)]


def vocab_of(model_dir: Path) -> tuple[int, set[int]]:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    special: set[int] = set()
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = cfg.get(k)
        special.update(v if isinstance(v, list) else ([v] if v is not None else []))
    tok = Path(model_dir) / "tokenizer.json"
    if tok.exists():
        special.update(int(t["id"]) for t in json.loads(tok.read_text()).get("added_tokens", []))
    return int(cfg["vocab_size"]), special


class SharedEngine:
    """Opens the engine on first use (inside a measured cell, so a failed load is that cell's
    OOM record) and keeps it for the next load points. Its KV cache is sized for the largest
    of ``loads`` (every point it will serve; default: the first point's)."""

    def __init__(self, settings: dict[str, Any], model_dir: Path, device: str,
                 loads: list[dict[str, Any]] | None = None, model_dirs: dict[str, Path] | None = None) -> None:
        self.settings, self.model_dir, self.device = settings, model_dir, device
        self.model_dirs = model_dirs  # every precision's checkpoint of the model: one engine per model
        self.kv_cache_bytes = kv_budget(settings, model_dir, loads or [settings["point"]])
        self.engine = None

    def get(self):  # type: ignore[no-untyped-def]
        if self.engine is None:
            from .engines import open_engine

            t0 = time.monotonic()
            self.engine = open_engine(self.settings, self.model_dir, self.device, self.kv_cache_bytes,
                                      model_dirs=self.model_dirs)
            log.info("engine %s loaded in %.1f s", self.engine.name, time.monotonic() - t0)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def serve_point(settings: dict[str, Any], shared: SharedEngine, mon: Monitor) -> dict[str, Any]:
    lp = settings["point"]
    info = model_info(shared.model_dir)
    vocab, special = vocab_of(shared.model_dir)
    n, plen, olen, concurrency = lp["requests"], lp["prompt_len"], lp["output_len"], lp["concurrency"]
    engine = shared.get()
    seed, tag = settings["seed"], settings["load_point"]
    if settings["warmup_requests"]:
        warm = make_prompts(settings["warmup_requests"], plen, vocab, special, seed, f"{tag}:warmup")
        engine.run(warm, olen, min(concurrency, len(warm)), tag=f"{tag}-warmup")
    traces, rep_tokens, rep_seconds, counts = [], [], [], []
    open_loop = lp["mode"] == "rate"
    steps = StepLog(energy_reader_of(mon))  # the measured repeats' engine steps
    progress = Progress(settings["repeats"], f"load point {tag}: repeat", log)
    peaks = getattr(engine, "peaks", None)
    if peaks is not None:
        peaks.reset()
    mon.begin_window("serve")
    t_begin = time.monotonic()
    r = 0
    while r < settings["repeats"] or time.monotonic() - t_begin < settings["min_seconds"]:
        prompts = make_prompts(n, plen, vocab, special, seed, f"{tag}:repeat{r}")
        if r:
            mon.mark()  # a repeat boundary: energy and memory per repeat (docs/noise.md)
        offsets = (arrival_offsets(n, lp["rate"], lp["arrivals"], seed_tag(seed, tag, r)) if open_loop
                   else None)
        t0 = time.monotonic()
        got = engine.run(prompts, olen, concurrency, tag=f"{tag}-rep{r}",
                         **({"arrivals": offsets} if open_loop else {}),
                         **({"steps": steps} if getattr(engine, "logs_steps", False) else {}))
        rep_seconds.append(time.monotonic() - t0)
        counts.append(repeat_counts(got, repeat_origin(got, offsets), lp.get("slo")))
        tokens = sum(t.tokens for t in got)
        if tokens != n * olen:
            raise RuntimeError(f"repeat {r}: {tokens} tokens generated, expected {n} × {olen} (fixed length)")
        rep_tokens.append(tokens)
        traces.append(got)
        r += 1
        progress.update(min(r, settings["repeats"]), items=sum(rep_tokens),
                        extra=f"this repeat {tokens / rep_seconds[-1]:.1f} tok/s")
    window = mon.end_window("serve")
    fig = {**(window.spread_figures(r) if r >= 2 else window.figures()), **window.energy_flags()}
    generated = sum(rep_tokens)
    energy = fig["energy_j"]
    return {
        **load_columns(settings, engine),
        **goodput_figures(counts, engine.trace_source),
        **phase_figures(traces, engine.trace_source),
        **monitor_energy_figures(steps, mon),
        "precision": settings["precision"],
        **{k: fig[k] for k in (*WINDOW_FIGURES, *ENERGY_FLAGS)},
        **memory_figures(engine, fig["amu_gb"], shared.kv_cache_bytes),
        **latency_figures(traces, engine.trace_source),
        **throughput_figures(rep_tokens, rep_seconds, "wall_clock_per_repeat"),
        "energy_j_per_token": energy.derive(lambda e: e / generated, "/generated_tokens"),
        "repeats": r,
        "concurrency": concurrency,
        "batch_size": min(concurrency, engine.batch_cap or concurrency),
        "running_peak": peaks.running if peaks is not None else None,
        "prompt_len": plen,
        "output_len": olen,
        "engine": engine.name,
        "engine_fallback": getattr(engine, "fallback_reason", None),
        "weight_bits": info["weight_bits"],
        "quant_method": info.get("quant_method"),
        "tokens": generated,
        "samples": sum(len(t) for t in traces),
        "seconds": window.seconds,
        "params_total": info["params_total"],
        "disk_bytes": info["disk_bytes"],
        "seq_length": plen + olen,
    }


def load_columns(settings: dict[str, Any], engine: Any) -> dict[str, Any]:
    """The load point's plain record columns: its mode, arrival rate and process, SLO limits,
    the KV cache's dtype as served, and the precision set."""
    lp, slo = settings["point"], settings["point"].get("slo") or {}
    open_loop = lp["mode"] == "rate"
    return {
        "load_mode": lp["mode"],
        "request_rate_rps": float(lp["rate"]) if open_loop else None,
        "arrivals": lp["arrivals"] if open_loop else None,
        "slo_ttft_ms": slo.get("ttft_ms"),
        "slo_tpot_ms": slo.get("tpot_ms"),
        # what served it: vLLM's kv_cache_dtype setting; the transformers fallback's cache is "auto"
        "kv_cache_dtype": getattr(engine, "kv_cache_dtype", settings["vllm"].get("kv_cache_dtype", "auto")),
        "precision_set": settings.get("precision_set", "paper"),
    }
