"""Serving engines behind one interface: ``run(prompts, output_len, concurrency)`` returns a
:class:`~.latency.RequestTrace` per request, timed by the client.

- :class:`VllmEngine` drives vLLM's engine step by step (``LLM.llm_engine.add_request`` /
  ``step``), keeping ``concurrency`` requests in flight (offline: all of them, the engine
  batches up to ``max_num_seqs``). Each step returns the tokens it generated, so each
  token's time is the step at which the client received it: true per-request TTFT, TPOT
  and ITL, as vLLM's serving benchmark measures them over a stream. (``LLM.get_metrics()``
  gives only histograms over all requests; ``RequestOutput.metrics`` is not filled in by
  the V1 engine.)
- :class:`TransformersEngine` (fallback) runs a manual prefill + per-step decode loop over a
  ``DynamicCache`` in static batches of ``concurrency`` requests (closed loop: a batch's
  requests are submitted together and the next batch starts when it finishes).

Open loop (``arrivals``: each request's offset in seconds from the run's start,
:mod:`.arrivals`): a request's ``submitted`` is its scheduled arrival, whenever the loop gets to
it. vLLM: the requests due are added before each engine step (up to ``concurrency`` in flight,
the point's cap); with nothing in flight the client sleeps until the next arrival.
transformers: first come, first served static batches of the requests that have arrived (up to
``concurrency``), sleeping while none has.

``steps`` (a :class:`~.phases.StepLog`) logs each engine step's edges and its prefill and decode
tokens, for the prefill / decode energy. Each trace carries the engine's prefill / decode split
(:mod:`.phases`): vLLM's own per-request stats, or the transformers batch's.

Output lengths are fixed (vLLM: ``min_tokens = max_tokens``, ``ignore_eos``; transformers:
greedy decode for exactly ``output_len`` steps). Greedy sampling in both.

Which engine serves a model here (vLLM, or the transformers fallback for all its precisions) is
:mod:`.engine_choice`'s decision; :func:`open_engine` follows it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from .engine_choice import model_engine
from .kv_cache import kv_bytes_per_token_of
from .latency import RequestTrace
from .phases import StepLog, set_from_batch, step_tokens
from .vllm_probe import SchedulerPeaks, distinct_bytes, worker_memory

log = logging.getLogger("effbench.inference")

TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class EngineStartError(RuntimeError):
    """vLLM's engine core process failed to start; the message carries its root cause."""


# The last exception line of a traceback, as vLLM's engine core prints it to the shared stderr
# (each line may carry a "(EngineCore_DP0 pid=N) " prefix).
_EXCEPTION_LINE = re.compile(r"^(?:\([^)]*\)\s*)?((?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): .+)$")


def engine_core_root_cause(limit_bytes: int = 256 * 1024) -> str | None:
    """The last exception line in the tail of this process's stderr when stderr is a file (a
    job's log: the rules send stdout and stderr there, and vLLM's engine core inherits it)."""
    try:
        path = os.readlink("/proc/self/fd/2")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - limit_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:  # stderr is a terminal, a pipe or gone: no log to read back
        return None
    found = [m.group(1) for m in map(_EXCEPTION_LINE.match, text.splitlines()) if m]
    return found[-1].strip() if found else None


class VllmEngine:
    name = "vllm"
    trace_source = "vllm_engine_step_client_clock"
    logs_steps = True  # run() takes a StepLog

    def __init__(self, model_dir: Path, dtype: str, seed: int, vllm: dict[str, Any], device: str, threads: int,
                 kv_cache_bytes: int) -> None:
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        # The CPU platform turns this legacy variable (whole GiB) into kv_cache_memory_bytes,
        # overriding the budget passed below.
        if os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None) is not None:
            log.warning("VLLM_CPU_KVCACHE_SPACE ignored: the KV cache is sized to the load points")
        # Callables sent to the workers (worker_memory) travel pickled; vLLM refuses that
        # unless allowed. Set before the engine processes start, as they read it too.
        os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
        single = single_process(vllm)
        from vllm.engine.arg_utils import EngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.llm_engine import LLMEngine

        args = EngineArgs(
            model=str(model_dir), tokenizer=str(model_dir), dtype=TORCH_DTYPES[dtype], seed=seed,
            max_model_len=vllm["max_model_len"], max_num_seqs=vllm["max_num_seqs"],
            enforce_eager=vllm["enforce_eager"] or device == "cpu",
            kv_cache_memory_bytes=kv_cache_bytes, block_size=vllm["block_size"],
            kv_cache_dtype=vllm.get("kv_cache_dtype", "auto"),
            disable_log_stats=False,  # the scheduler's and requests' stats feed SchedulerPeaks
            **({"distributed_executor_backend": "uni"} if single else {}),
        )
        self.batch_cap = vllm["max_num_seqs"]
        self.kv_cache_dtype = vllm.get("kv_cache_dtype", "auto")
        self.peaks = SchedulerPeaks()
        try:
            self.engine = LLMEngine.from_engine_args(args, usage_context=UsageContext.LLM_CLASS,
                                                     stat_loggers=[self.peaks.logger])
        except RuntimeError as exc:
            if "Engine core initialization failed" not in str(exc):
                raise
            # The engine core is a child process: the parent only says "see root cause above".
            # Name the cause, so that a memory failure (KV budget over what the device has,
            # weights that do not fit) is recognised as an out-of-memory result.
            raise EngineStartError(f"{exc} Root cause in the engine core: "
                                   f"{engine_core_root_cause() or 'not found in the job log'}") from exc
        self.memory = self.engine.collective_rpc(worker_memory)[0]

    def run(self, prompts: list[list[int]], output_len: int, concurrency: int, tag: str = "r",
            arrivals: list[float] | None = None, steps: StepLog | None = None) -> list[RequestTrace]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if arrivals is not None and len(arrivals) != len(prompts):
            raise ValueError(f"{len(arrivals)} arrival times for {len(prompts)} prompts")
        params = SamplingParams(temperature=0.0, max_tokens=output_len, min_tokens=output_len, ignore_eos=True,
                                output_kind=RequestOutputKind.DELTA, detokenize=False)
        pending = deque(enumerate(prompts))
        traces: dict[str, RequestTrace] = {}
        names: dict[str, str] = {}  # the engine's id -> ours
        order: list[str] = []
        in_flight = 0
        t_start = time.monotonic()  # the origin of the arrival offsets
        while pending or in_flight:
            while pending and in_flight < concurrency:
                i, p = pending[0]
                if arrivals is None:
                    submitted = time.monotonic()
                elif (submitted := t_start + arrivals[i]) > time.monotonic():
                    break  # not arrived yet
                pending.popleft()
                tr = RequestTrace(submitted, [], len(p))
                rid = self.engine.add_request(f"{tag}-{i}", TokensPrompt(prompt_token_ids=p), params)
                traces[rid] = traces[f"{tag}-{i}"] = tr  # the engine may suffix the id
                names[rid] = f"{tag}-{i}"
                order.append(rid)
                in_flight += 1
            if not in_flight:  # open loop, idle: wait for the next arrival
                time.sleep(max(0.0, t_start + arrivals[pending[0][0]] - time.monotonic()))  # type: ignore[index]
                continue
            began = steps.begin() if steps is not None else None
            outs = self.engine.step()
            now = time.monotonic()
            prefill = decode = 0
            for o in outs:
                tr = traces[o.request_id]
                new = len(o.outputs[0].token_ids)
                pf, dc = step_tokens(tr.tokens, new, tr.prompt_tokens)
                prefill, decode = prefill + pf, decode + dc
                tr.token_times.extend([now] * new)
                if o.finished:
                    in_flight -= 1
                    got = self.peaks.pop_finished(o.request_id, names.get(o.request_id, o.request_id))
                    if got is not None:
                        tr.prefill_s, tr.decode_s = got[1], got[2]
            if steps is not None:
                steps.end(began, prefill, decode)  # type: ignore[arg-type]
        return [traces[r] for r in order]

    def close(self) -> None:
        try:
            self.engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class TransformersEngine:
    name = "transformers"
    trace_source = "transformers_decode_step_clock"
    logs_steps = True  # run() takes a StepLog
    fallback_reason: str | None = None  # set when it serves in place of vLLM (open_engine)

    def __init__(self, model_dir: Path, dtype: str, device: str, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if device == "cpu":
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = device
        self.batch_cap = None  # static batches of ``concurrency`` requests
        self.kv_cache_dtype = "auto"  # its DynamicCache holds K and V at the model's dtype
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=getattr(torch, TORCH_DTYPES[dtype])).to(device).eval()
        self.memory = {"weights_bytes": distinct_bytes(self.model.parameters()),
                       "weights_source": "torch_parameter_bytes",
                       "kv_bytes_per_token": kv_bytes_per_token_of(self.model.config.to_dict(), dtype)}

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def run(self, prompts: list[list[int]], output_len: int, concurrency: int, tag: str = "r",
            arrivals: list[float] | None = None, steps: StepLog | None = None) -> list[RequestTrace]:
        if arrivals is not None and len(arrivals) != len(prompts):
            raise ValueError(f"{len(arrivals)} arrival times for {len(prompts)} prompts")
        traces: list[RequestTrace] = []
        t_submit = time.monotonic()  # closed loop: offline submission; open loop: the offsets' origin
        offline = concurrency >= len(prompts)
        with self.torch.inference_mode():
            start = 0
            while start < len(prompts):
                if arrivals is None:
                    chunk = prompts[start:start + concurrency]
                    submitted = [t_submit if offline else time.monotonic()] * len(chunk)
                else:  # first come, first served: the requests that have arrived, up to the cap
                    time.sleep(max(0.0, t_submit + arrivals[start] - time.monotonic()))
                    now, end = time.monotonic(), start + 1
                    while end < len(prompts) and end - start < concurrency and t_submit + arrivals[end] <= now:
                        end += 1
                    chunk = prompts[start:end]
                    submitted = [t_submit + a for a in arrivals[start:end]]
                traces += self._batch(chunk, submitted, output_len, steps)
                start += len(chunk)
        return traces

    def _batch(self, chunk: list[list[int]], submitted: list[float], output_len: int,
               steps: StepLog | None) -> list[RequestTrace]:
        """One static batch: its prefill forward gives each request's first token, then one decode
        forward per further token. A step (logged) ends when its token is on the host."""
        from transformers import DynamicCache

        torch = self.torch
        batch = [RequestTrace(t, [], len(p)) for t, p in zip(submitted, chunk)]
        ids = torch.tensor(chunk, device=self.device)
        began = steps.begin() if steps is not None else None
        t_batch = time.monotonic()
        cache = DynamicCache()
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        for step in range(output_len):
            nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
            self._sync()
            now = time.monotonic()
            for tr in batch:
                tr.token_times.append(now)
            if steps is not None:
                steps.end(began, sum(len(p) for p in chunk) if step == 0 else 0, 0 if step == 0 else len(chunk))  # type: ignore[arg-type]
            if step + 1 < output_len:
                began = steps.begin() if steps is not None else None
                out = self.model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        for tr in batch:
            set_from_batch(tr, t_batch)
        return batch

    def close(self) -> None:
        pass


def single_process(vllm: dict[str, Any]) -> bool:
    """Whether vLLM runs its engine core in this process (``vllm.single_process``); sets vLLM's
    switch for it, which vLLM reads when the engine is created. Two child processes (engine core,
    worker) each import vLLM again: ~40 s per engine start on 2 CPU cores."""
    single = bool(vllm.get("single_process"))
    if single:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return single


ENGINE_KEYS = ("engine", "dtype", "seed", "vllm", "threads", "device")


def open_engine(settings: dict[str, Any], model_dir: Path, device: str, kv_cache_bytes: int,
                model_dirs: dict[str, Path] | None = None):  # type: ignore[no-untyped-def]
    """The engine for these settings; only ``ENGINE_KEYS`` matter (shared by a model's load points).
    vLLM reserves ``kv_cache_bytes`` of KV cache; transformers grows its cache per batch. Where
    vLLM cannot serve a checkpoint of this model here (:func:`.engine_choice.vllm_unavailable_reason`,
    over ``model_dirs``: {precision: checkpoint} of every precision of the model, default this one),
    transformers serves all of them (:func:`.engine_choice.model_engine`), and the engine's
    ``fallback_reason`` says why (the record's ``engine_fallback``)."""
    name, why = model_engine(settings, model_dirs or {str(settings.get("precision", "this")): model_dir}, device)
    if why:
        log.warning("%s", why)
        engine = TransformersEngine(model_dir, settings["dtype"], device, settings["threads"])
        engine.fallback_reason = why
        return engine
    if settings["engine"] == "vllm":
        return VllmEngine(model_dir, settings["dtype"], settings["seed"], settings["vllm"], device, settings["threads"],
                          kv_cache_bytes)
    if settings["engine"] == "transformers":
        return TransformersEngine(model_dir, settings["dtype"], device, settings["threads"])
    raise ValueError(f"unknown engine {settings['engine']!r}")
