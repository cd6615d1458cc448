"""What vLLM itself reports about its memory: the worker's loaded weights and KV cache, and
the scheduler's KV-cache usage and running requests step by step.

- :func:`worker_memory` runs inside each worker (``collective_rpc``) after the engine is up.
- :class:`SchedulerPeaks` is a vLLM stat logger (the public ``stat_loggers`` hook of
  ``LLMEngine``): it keeps the largest KV-cache usage and running-request count the scheduler
  reported since the last :meth:`SchedulerPeaks.reset`, and each finished request's own stats
  (``FinishedRequestStats`` in ``IterationStats.finished_requests``: queued, prefill and decode
  time, engine-core timestamps) until the engine's client takes them (:meth:`SchedulerPeaks.pop_finished`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def distinct_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied or viewed tensors count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def repacked_linear_bytes(model: Any) -> int:
    """Bytes of the linear weights vLLM's CPU build moved out of the model's parameters.

    On a CPU, vLLM hands each unquantized linear layer's weight to a oneDNN / SGL kernel that keeps
    its own packed copy (``dispatch_cpu_unquantized_gemm``) and replaces ``layer.weight`` with an
    empty tensor: the parameters then hold only embeddings, norms and MoE experts (a dense xs model
    read 0.53 MB of its 2.88 MB). Such a layer still knows its shape (``input_size_per_partition``,
    ``output_partition_sizes``) and dtype, so it is counted as loaded: rows × columns × bytes."""
    total = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if getattr(m, "cpu_linear", None) is None or w is None or w.numel() != 0:
            continue
        rows = sum(getattr(m, "output_partition_sizes", None) or [getattr(m, "output_size", 0)])
        cols = getattr(m, "input_size_per_partition", None) or getattr(m, "input_size", 0)
        total += int(rows) * int(cols) * w.element_size()
    return total


def worker_memory(worker: Any) -> dict[str, Any]:
    """Weights, KV cache and KV cache spec of one vLLM worker (runs in the worker process)."""
    model = worker.get_model()
    specs = worker.get_kv_cache_spec()
    runner = worker.model_runner
    repacked = repacked_linear_bytes(model)
    return {
        "weights_bytes": distinct_bytes(model.parameters()) + repacked,
        "weights_source": "vllm_worker_parameter_bytes" + ("+cpu_repacked_linear_shapes" if repacked else ""),
        "kv_allocated_bytes": distinct_bytes(getattr(runner, "kv_caches", [])),
        # per layer: bytes one token occupies in that layer's KV pages
        "kv_bytes_per_token_per_layer": {name: s.page_size_bytes // s.block_size for name, s in specs.items()},
        "block_size": next(iter(specs.values())).block_size if specs else None,
    }


@dataclass
class SchedulerPeaks:
    kv_usage: float = 0.0  # fraction of the KV blocks in use, 0-1
    running: int = 0
    steps: int = 0
    # request id -> (queued_time, prefill_time, decode_time) s, of requests finished and not yet taken
    finished: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def reset(self) -> None:
        self.kv_usage, self.running, self.steps = 0.0, 0, 0

    def observe_finished(self, iteration_stats: Any) -> None:
        for f in getattr(iteration_stats, "finished_requests", None) or ():
            if f.request_id is not None:
                self.finished[f.request_id] = (float(f.queued_time), float(f.prefill_time), float(f.decode_time))

    def pop_finished(self, *request_ids: str) -> tuple[float, float, float] | None:
        """The engine's (queued, prefill, decode) s of a finished request, under any of its ids."""
        got = None
        for rid in request_ids:
            got = self.finished.pop(rid, None) or got
        return got

    def observe(self, stats: Any) -> None:
        if stats is None:
            return
        self.steps += 1
        self.kv_usage = max(self.kv_usage, float(stats.kv_cache_usage))
        self.running = max(self.running, int(stats.num_running_reqs))

    def logger(self, vllm_config: Any, engine_index: int = 0) -> Any:
        """Per-engine stat-logger factory for ``LLMEngine(stat_loggers=[...])``."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        peaks = self

        class _Logger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                       engine_idx: int = 0) -> None:
                peaks.observe(scheduler_stats)
                peaks.observe_finished(iteration_stats)

            def log_engine_initialized(self) -> None:
                pass

        return _Logger(vllm_config, engine_index)
