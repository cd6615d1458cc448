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
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..quantize.families import is_moe
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


def checkpoint_scheme(model_dir: Path) -> str | None:
    """What the quantize stage wrote (compressed-tensors ``quantization_config``): ``int4`` (W4A16),
    ``fp8`` (W8A8 FP8), ``int8`` (W8A8 int8), or None (no quantization: a bf16/fp16 cast)."""
    q = json.loads((Path(model_dir) / "config.json").read_text()).get("quantization_config") or {}
    for g in (q.get("config_groups") or {}).values():
        w, a = g.get("weights") or {}, g.get("input_activations") or {}
        if w.get("num_bits") == 4:
            return "int4"
        if w.get("num_bits") == 8 and a.get("num_bits") == 8:
            return "fp8" if w.get("type") == "float" else "int8"
    return None


def is_int4_checkpoint(model_dir: Path) -> bool:
    """A W4A16 compressed-tensors checkpoint (what the quantize stage writes for int4)."""
    return checkpoint_scheme(model_dir) == "int4"


def scheme_unavailable_reason(scheme: str | None, cfg: dict[str, Any] | None, device: str) -> str | None:
    """Why vLLM cannot serve a checkpoint quantized as ``scheme`` (:func:`checkpoint_scheme`) of a
    model of HF config ``cfg`` (None: architecture unknown, its MoE checks skipped) here, or None."""
    moe = bool(cfg) and is_moe(cfg)
    if scheme == "int4":
        return int4_unavailable_reason(device) or (int4_moe_unavailable_reason(device) if moe else None)
    if scheme in ("fp8", "int8"):
        return w8a8_unavailable_reason(scheme, device) or (w8a8_moe_unavailable_reason(scheme, cfg, device)
                                                           if moe else None)
    return None


def w8a8_unavailable_reason(precision: str, device: str) -> str | None:
    """Why vLLM cannot run W8A8 (``fp8`` | ``int8``: per-channel weights, dynamic per-token
    activations) linear layers on this host, or None. On CPU vLLM 0.32 picks, for FP8,
    ``CPUFP8W8A8ScaledMMLinearKernel`` (AMX-FP8 only) else ``ChannelWiseTorchFP8ScaledMMLinearKernel``
    (``torch._scaled_mm``, then the channel scales), and for int8 ``CPUInt8ScaledMMLinearKernel``
    (its AMX kernel where AMX is, else oneDNN): asked here by running ``torch._scaled_mm`` once, and by
    the build's oneDNN op."""
    if device != "cpu":
        return None
    import torch

    if precision == "fp8":
        try:
            a = torch.ones(2, 16).to(torch.float8_e4m3fn)
            torch._scaled_mm(a, a.t(), scale_a=torch.ones(1), scale_b=torch.ones(1), out_dtype=torch.bfloat16)
        except (RuntimeError, NotImplementedError) as exc:
            return f"torch._scaled_mm (vLLM's FP8 W8A8 kernel on a CPU without AMX-FP8) fails on this CPU: {exc}"
        return None
    import vllm._custom_ops  # noqa: F401 - loads the build's kernels into torch.ops._C

    if hasattr(torch.ops._C, "onednn_scaled_mm"):
        return None
    return "vllm-cpu has no int8 W8A8 kernel on this CPU (its oneDNN op onednn_scaled_mm is not in this build)"


# vLLM 0.32's CPU int8 fused-MoE kernels: {class: the multiple its hidden and expert FFN sizes must be}.
INT8_MOE_CPU_MULTIPLE = {"CPUExpertsInt8": 32, "ArmCPUExpertsInt8": 32, "PowerCPUExpertsInt8": 16,
                         "ZenCPUExpertsInt8": 1}


def w8a8_moe_unavailable_reason(precision: str, cfg: dict[str, Any] | None, device: str) -> str | None:
    """Why vLLM cannot serve W8A8 (``fp8`` | ``int8``) MoE experts on this host, or None, as vLLM's
    fused-MoE backend oracle asks its CPU kernels (device, then scheme; int8's then need the hidden
    and expert FFN sizes to be multiples of 32, 16 on POWER: :data:`INT8_MOE_CPU_MULTIPLE`). FP8's CPU
    experts (``CPUExpertsFp8`` W8A16, ``CPUExpertsFp8W8A8``) take 128×128 block-scaled weights only:
    per-channel FP8 experts have no CPU backend on any CPU."""
    if device != "cpu":
        return None
    from vllm.model_executor.layers.fused_moe.experts import cpu_moe
    from vllm.model_executor.layers.quantization.utils import quant_utils as qu

    if precision == "fp8":
        kernels = [cpu_moe.CPUExpertsFp8W8A8, cpu_moe.CPUExpertsFp8]
        if any(k._supports_quant_scheme(qu.kFp8StaticChannelSym, qu.kFp8DynamicTokenSym) for k in kernels):
            return None
        return ("vLLM's CPU fused-MoE FP8 kernels (CPUExpertsFp8W8A8, CPUExpertsFp8) take 128x128 "
                "block-scaled FP8 weights only: per-channel FP8 experts have no CPU backend "
                "(\"Unsupported FP8 MoE backend: NONE\")")
    kernels = [getattr(cpu_moe, name) for name in INT8_MOE_CPU_MULTIPLE if hasattr(cpu_moe, name)]
    here = [k for k in kernels if k._supports_current_device()]
    if not here:
        return ("vllm-cpu has no int8 W8A8 fused-MoE kernel on this CPU (CPUExpertsInt8 needs x86 with AMX "
                "tiles; the others ARM, POWER or zentorch): its experts cannot load")
    c = (cfg or {}).get("text_config") or cfg or {}
    sizes = {"hidden_size": c.get("hidden_size"),
             "expert FFN": c.get("moe_intermediate_size") or c.get("intermediate_size")}
    for k in here:
        m = INT8_MOE_CPU_MULTIPLE[k.__name__]
        if all(n is None or int(n) % m == 0 for n in sizes.values()):
            return None
    m = INT8_MOE_CPU_MULTIPLE[here[0].__name__]
    return (f"vLLM's int8 W8A8 fused-MoE kernel on this CPU ({here[0].__name__}) needs the hidden and expert "
            f"FFN sizes to be multiples of {m}: {', '.join(f'{k} {n}' for k, n in sizes.items())}")


def hf_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text())


def vllm_unavailable_reason(model_dir: Path, device: str) -> str | None:
    """Why vLLM cannot serve this checkpoint on this host (None: it can): its architecture
    (:func:`architecture_unavailable_reason`), or its quantized weights (:func:`scheme_unavailable_reason`).
    The CPU build ships its W4A16 kernel (``cpu_gemm_wna16``) only in its AVX-512 library: on an
    AVX2-only CPU an int4 checkpoint loads and then fails at its first step; its int4 MoE experts need
    AMX. W8A8 (fp8, int8) linear layers run on any x86 CPU here; their MoE experts do not
    (:func:`w8a8_moe_unavailable_reason`)."""
    cfg = hf_config(model_dir)
    return architecture_unavailable_reason(cfg, device) or scheme_unavailable_reason(checkpoint_scheme(model_dir),
                                                                                      cfg, device)


def int4_unavailable_reason(device: str) -> str | None:
    """Why vLLM cannot serve a W4A16 (int4) checkpoint on this host, or None."""
    if device != "cpu":
        return None
    import torch
    import vllm._custom_ops  # noqa: F401 - loads the build's kernels into torch.ops._C

    if hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return None
    return ("vllm-cpu has no int4 (W4A16) kernel on this CPU (its cpu_gemm_wna16 ships only in the "
            "AVX-512 build)")


def int4_moe_unavailable_reason(device: str) -> str | None:
    """Why vLLM cannot serve W4A16 (int4) MoE experts on this host, or None: the CPU build's
    fused-MoE int4 kernels (``CPUExpertsInt4``: x86 with AMX; ``ZentorchExpertsInt4``: zentorch)
    say whether they support this CPU, as vLLM's backend oracle asks them."""
    if device != "cpu":
        return None
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUExpertsInt4

    from vllm import envs

    kernels = [CPUExpertsInt4]
    try:
        from vllm.model_executor.layers.fused_moe.experts.zentorch_moe import ZentorchExpertsInt4

        if envs.VLLM_CPU_INT4_W4A8:  # vLLM's switch for the ZEN_CPU (DA8W4) path
            kernels.append(ZentorchExpertsInt4)
    except ImportError:  # that backend cannot serve either
        pass
    if any(k._supports_current_device() for k in kernels):
        return None
    return ("vllm-cpu has no int4 (W4A16) fused-MoE kernel on this CPU (CPUExpertsInt4 needs x86 with AMX "
            "tiles; the ZEN_CPU backend needs zentorch): its experts cannot load")


def mla_unavailable_reason(c: dict[str, Any], head_sizes: list[int], backend: str) -> str | None:
    """Why vLLM's MLA attention (``backend``, whose kernels take latent head sizes
    ``head_sizes``: kv_lora_rank + qk_rope_head_dim) cannot serve MLA config ``c``; None for a
    model without MLA or one it can serve. Pure."""
    c = c.get("text_config") or c
    if c.get("kv_lora_rank") is None:
        return None
    latent = int(c["kv_lora_rank"]) + int(c["qk_rope_head_dim"])
    if latent in head_sizes:
        return None
    return (f"vLLM's MLA attention ({backend}) takes latent head sizes {', '.join(map(str, head_sizes))} only "
            f"(kv_lora_rank + qk_rope_head_dim; DeepSeek-V2/V3: 512 + 64), this model's is "
            f"{c['kv_lora_rank']} + {c['qk_rope_head_dim']} = {latent}")


def vllm_mla_head_sizes(device: str) -> tuple[list[int], str]:
    """(the latent head sizes vLLM's MLA attention serves on ``device``, the backend's name). The
    shared MLA metadata takes ``MLACommonBackend``'s sizes; the CPU backends (CPU_MLA, and AMX_MLA
    where AMX is present) compile their decode kernel for fewer."""
    from vllm.model_executor.layers.attention.mla_attention import MLACommonBackend

    common = list(MLACommonBackend.get_supported_head_sizes())
    if device != "cpu":
        return common, "MLACommonBackend"
    from vllm.v1.attention.backends.mla.cpu_mla import CPUMLABackend

    return [x for x in CPUMLABackend.get_supported_head_sizes() if x in common], "CPU_MLA"


def architecture_unavailable_reason(c: dict[str, Any], device: str) -> str | None:
    """Why vLLM cannot serve a model of HF config ``c`` on ``device`` at any precision, or None.
    MLA: its latent head size (:func:`mla_unavailable_reason`). Dense and MoE attention: none
    known (a Mixtral-style MoE at bf16 goes through the CPU build's fused-MoE path)."""
    if (c.get("text_config") or c).get("kv_lora_rank") is None:
        return None
    return mla_unavailable_reason(c, *vllm_mla_head_sizes(device))


def precision_unavailable_reason(precision: str, model_dir: Path | None, device: str,
                                 like: Path | None = None) -> str | None:
    """Why vLLM cannot serve this precision of a model here: from its checkpoint where it exists,
    else from its name (the quantize stage writes int4 as W4A16, fp8 and int8 as W8A8
    compressed-tensors) and the architecture of ``like`` (another checkpoint of the same model,
    where there is one), so that a job can decide before its model's other checkpoints are made."""
    if model_dir is not None:
        return vllm_unavailable_reason(model_dir, device)
    cfg = hf_config(like) if like is not None else None
    why = architecture_unavailable_reason(cfg, device) if cfg else None
    if why or precision not in ("int4", "fp8", "int8"):
        return why
    return scheme_unavailable_reason(precision, cfg, device)


def engine_for(settings: dict[str, Any], model_dir: Path, device: str) -> tuple[str, str | None]:
    """(the engine that will serve this one checkpoint, why it is not the configured one or None).
    A model's precisions are served by one engine: see :func:`model_engine`."""
    if settings["engine"] == "vllm":
        why = vllm_unavailable_reason(model_dir, device)
        if why:
            return "transformers", why
    return settings["engine"], None


def one_engine_per_model(configured: str, reasons: dict[str, str | None]) -> tuple[str, str | None]:
    """The rule "one engine per model", a pure function of each precision's reason why vLLM cannot
    serve it here (``reasons``: {precision: reason or None}, :func:`vllm_unavailable_reason`): when
    any precision of a model falls back to transformers, every precision of that model is served
    (and scored for fidelity) by transformers too, so that the model's precisions are compared
    within one engine. Returns (engine, why it is not the configured one or None)."""
    if configured != "vllm":
        return configured, None
    fallen = {p: r for p, r in reasons.items() if r}
    if not fallen:
        return configured, None
    by_reason: dict[str, list[str]] = {}  # one architecture reason names all its precisions once
    for p, r in fallen.items():
        by_reason.setdefault(r, []).append(p)
    why = "; ".join(f"{', '.join(ps)} of this model: {r}" for r, ps in by_reason.items())
    return "transformers", f"served by transformers because {why} (one engine per model)"


def model_engine(settings: dict[str, Any], model_dirs_by_precision: dict[str, Path | None], device: str
                 ) -> tuple[str, str | None]:
    """(the engine every precision of one model is served with, why it is not the configured one
    or None), from all its precisions (:func:`one_engine_per_model`): each from its checkpoint, or
    from its name where the job does not have it (:func:`precision_unavailable_reason`). Used by
    each inference job of the model (which has its own checkpoint only: its serving does not wait
    for, nor re-run with, the others') and by its fidelity job (which has them all)."""
    if settings["engine"] != "vllm":
        return settings["engine"], None
    like = next((d for d in model_dirs_by_precision.values() if d is not None), None)  # the architecture
    return one_engine_per_model(settings["engine"], {p: precision_unavailable_reason(p, d, device, like)
                                                     for p, d in model_dirs_by_precision.items()})


def open_engine(settings: dict[str, Any], model_dir: Path, device: str, kv_cache_bytes: int,
                model_dirs: dict[str, Path] | None = None):  # type: ignore[no-untyped-def]
    """The engine for these settings; only ``ENGINE_KEYS`` matter (shared by a model's load points).
    vLLM reserves ``kv_cache_bytes`` of KV cache; transformers grows its cache per batch. Where
    vLLM cannot serve a checkpoint of this model here (:func:`vllm_unavailable_reason`, over
    ``model_dirs``: {precision: checkpoint} of every precision of the model, default this one),
    transformers serves all of them (:func:`model_engine`), and the engine's ``fallback_reason``
    says why (the record's ``engine_fallback``)."""
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
