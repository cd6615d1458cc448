"""The record's columns: names, types, units, which stages fill them and their bounds.

:mod:`effbench.record` builds the Arrow schema, validates and writes records from these;
docs/record-schema.md is generated from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

# Versions only ever add columns: 2 added fine-tuning, serving and Slurm columns to 1; 3 added
# intervals, the energy-window flag and the isolation columns; 4 the pretraining model family and
# kernel path; 5 the energy scope, fp8/int8, open-loop load, goodput and the prefill/decode split. The reader
# reads older records (their absent columns are null) and refuses newer ones.
SCHEMA_VERSION = 5
STAGES = ("pretrain", "finetune", "quantize", "inference")
STATUSES = ("ok", "oom", "failed")
PRECISIONS = ("fp32", "bf16", "fp16", "int4", "fp8", "int8")  # training precisions, and the served ones
ENGINES, DEVICE_KINDS = ("vllm", "transformers"), ("cuda", "cpu")
QUANT_METHODS = ("cast", "rtn", "gptq", "awq", "fp8_dynamic", "smoothquant_gptq", "smoothquant_rtn")
QUALITY_LABELS = ("significant", "not significant", "baseline")  # spread.difference_label, or the baseline
FIDELITY_VERDICTS = ("pass", "fail", "baseline")  # effbench.fidelity.measures.VERDICTS
ALL = frozenset(STAGES)
# What an energy counter covers (effbench.measure.energy_scope): the GPU board; a GH200-style
# module (GPU + Grace CPU + memory); a CPU package (RAPL); a whole node.
ENERGY_SCOPES = ("gpu", "module", "cpu_package", "node")
LOAD_MODES = ("offline", "concurrency", "rate")  # closed loop (all at once, N in flight) | open loop
ARRIVALS = ("poisson", "constant")
PRECISION_SETS = ("paper", "beyond_paper")
# The files a cell writes (the workflow's rules name them as outputs).
RECORD_FILE = "record.parquet"
SAMPLES_FILE = "samples.parquet"
SIDE_CAR = "effbench.json"  # the quantize stage's description of a model, beside its weights
# The figures every stage's record takes from its measured window (``Window.figures()``).
WINDOW_FIGURES = ("amu_gb", "amu_frac", "peak_mem_gb", "pcu_frac", "aec_w", "energy_j")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    stages: frozenset[str] = ALL
    required: bool = False  # must be non-null when status == "ok" in these stages
    figure: bool = False  # a measured figure with __source / __missing companions
    # What a non-null value may be (checked on write and on read): one of ``enum``; at least
    # ``lo`` and at most ``hi``. A float is always finite. A figure's bounds apply to its value,
    # not to its interval, whose ends need only be finite and ordered (a t interval around a
    # small non-negative figure may reach below zero).
    enum: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None


def _c(name: str, type_: pa.DataType, doc: str, stages: Iterable[str] = STAGES, **kw: Any) -> Column:
    return Column(name, type_, doc, frozenset(stages), **kw)


S, F, I, B, T = pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.timestamp("us", tz="UTC")
# A figure's 95 % interval (null when its noise was not measured): see docs/noise.md.
CI_SUFFIXES = (("__ci_low", F), ("__ci_high", F), ("__ci_n", I), ("__ci_method", S))
PT, FT, QT, IT = ("pretrain",), ("finetune",), ("quantize",), ("inference",)

COLUMNS: tuple[Column, ...] = (
    # identity
    _c("schema_version", I, "Version of this schema.", required=True),
    _c("stage", S, "pretrain | finetune | quantize | inference.", required=True, enum=STAGES),
    _c("cell", S, "The cell's path under its stage, e.g. 'xs/gqa'.", required=True),
    _c("run_id", S, "Unique id of this run (stage/cell/start time).", required=True),
    _c("status", S, "ok | oom | failed.", required=True, enum=STATUSES),
    _c("status_detail", S, "Why a run is not ok (e.g. the OOM message and the settings tried)."),
    # cell keys
    _c("size", S, "Model size name from the config (pretraining).", PT, required=True),
    _c("technique", S, "Pretraining technique: mha, mqa, gqa, mla, moe.", PT, required=True),
    _c("model", S, "Model name from the config (fine-tuning, quantization, inference).", FT + QT + IT),
    _c("method", S, "Fine-tuning method: lora, loraplus, rslora, dora, pissa, freeze, full.", FT),
    _c("task", S, "Task or dataset name.", FT + IT),
    _c("precision", S, "bf16 | fp16 | int4 | fp8 | int8 (quantization, inference) or training precision.", ALL, enum=PRECISIONS),
    _c("load_point", S, "Inference load point name from the config (a swept rate: <name>@<rate>).", IT),
    _c("precision_set", S, "paper (the paper's precisions) | beyond_paper (fp8, int8: quantize.beyond_paper).",
       QT + IT, enum=PRECISION_SETS),
    # figures (measured, with source)
    _c("amu_gb", F, "AMU: time-averaged memory used, GB (device memory on GPU, process-tree PSS on CPU).", figure=True, lo=0),
    _c("amu_frac", F, "AMU as a fraction of the device's total memory.", figure=True, lo=0, hi=1),
    _c("peak_mem_gb", F, "Largest memory sample in the window, GB.", figure=True, lo=0),
    _c("pcu_frac", F, "PCU: time-averaged utilisation / peak, 0-1.", figure=True, lo=0, hi=1),
    _c("al_s_per_iter", F, "AL: mean wall time per training iteration, s.", PT + FT, figure=True, lo=0),
    _c("al_s_per_request", F, "AL: mean end-to-end time per request, s.", IT, figure=True, lo=0),
    _c("tt_tokens_per_param_s", F, "TT: tokens / parameters / s (pretraining).", PT, figure=True, lo=0),
    _c("st_samples_per_param_s", F, "ST: samples / parameters / s (fine-tuning).", FT, figure=True, lo=0),
    _c("it_tokens_per_s", F, "IT: generated tokens / s.", IT, figure=True, lo=0),
    _c("tokens_per_s", F, "Tokens processed per second (not normalised).", PT + FT + IT, figure=True, lo=0),
    _c("aec_w", F, "AEC: average power over the window, W.", figure=True, lo=0),
    _c("energy_j", F, "Total energy over the window, J (pretraining across nodes: every node's, summed).",
       figure=True, lo=0),
    _c("energy_scope", S, "What the energy counter covers: gpu | module (GH200: GPU + Grace CPU + memory) | "
       "cpu_package (RAPL) | node; null where the host has no energy counter (energy_j is then missing with the reason).", enum=ENERGY_SCOPES),
    _c("energy_j_per_token", F, "Energy per processed (or generated) token, J.", PT + FT + IT, figure=True, lo=0),
    _c("energy_j_per_sample", F, "Energy per sample, J.", FT, figure=True, lo=0),
    _c("mfu_frac", F, "Model FLOPs utilisation: analytic FLOP/s over the dense peak of all devices "
       "(per device × world size; the source names the count).", PT, figure=True, lo=0),
    _c("ttft_s_mean", F, "TTFT: time to first token (submission to first generated token seen by the client), mean, s.", IT, figure=True, lo=0),
    _c("ttft_s_p50", F, "TTFT: time to first token (submission to first generated token seen by the client), p50, s.", IT, figure=True, lo=0),
    _c("ttft_s_p90", F, "TTFT: time to first token (submission to first generated token seen by the client), p90, s.", IT, figure=True, lo=0),
    _c("ttft_s_p99", F, "TTFT: time to first token (submission to first generated token seen by the client), p99, s.", IT, figure=True, lo=0),
    _c("tpot_s_mean", F, "TPOT: time per output token after the first, per request: (E2E - TTFT) / (tokens - 1), mean, s.", IT, figure=True, lo=0),
    _c("tpot_s_p50", F, "TPOT: time per output token after the first, per request: (E2E - TTFT) / (tokens - 1), p50, s.", IT, figure=True, lo=0),
    _c("tpot_s_p90", F, "TPOT: time per output token after the first, per request: (E2E - TTFT) / (tokens - 1), p90, s.", IT, figure=True, lo=0),
    _c("tpot_s_p99", F, "TPOT: time per output token after the first, per request: (E2E - TTFT) / (tokens - 1), p99, s.", IT, figure=True, lo=0),
    _c("itl_s_mean", F, "ITL: inter-token latency, gaps between consecutive tokens of a request (pooled), mean, s.", IT, figure=True, lo=0),
    _c("itl_s_p50", F, "ITL: inter-token latency, gaps between consecutive tokens of a request (pooled), p50, s.", IT, figure=True, lo=0),
    _c("itl_s_p90", F, "ITL: inter-token latency, gaps between consecutive tokens of a request (pooled), p90, s.", IT, figure=True, lo=0),
    _c("itl_s_p99", F, "ITL: inter-token latency, gaps between consecutive tokens of a request (pooled), p99, s.", IT, figure=True, lo=0),
    _c("e2e_s_mean", F, "E2E: end-to-end latency per request (submission to last token), mean, s.", IT, figure=True, lo=0),
    _c("e2e_s_p50", F, "E2E: end-to-end latency per request (submission to last token), p50, s.", IT, figure=True, lo=0),
    _c("e2e_s_p90", F, "E2E: end-to-end latency per request (submission to last token), p90, s.", IT, figure=True, lo=0),
    _c("e2e_s_p99", F, "E2E: end-to-end latency per request (submission to last token), p99, s.", IT, figure=True, lo=0),
    _c("energy_counter_updates", F, "Energy-counter updates expected in the measured window (window seconds × the counter's update rate; NVML ~12/s).", lo=0),
    _c("energy_window_short", B, "True when the measured window holds fewer than 20 energy-counter updates: its energy figures are coarse."),
    _c("load_mode", S, "offline | concurrency (closed loop) | rate (open loop: requests arrive at a rate).", IT,
       enum=LOAD_MODES),
    _c("request_rate_rps", F, "Open loop: the configured arrival rate, requests/s.", IT, lo=0),
    _c("arrivals", S, "Open loop: poisson | constant inter-arrival times.", IT, enum=ARRIVALS),
    _c("slo_ttft_ms", F, "The load point's TTFT limit, ms (goodput).", IT, lo=0),
    _c("slo_tpot_ms", F, "The load point's TPOT limit, ms (goodput).", IT, lo=0),
    _c("request_throughput_rps", F, "Achieved throughput: completed requests / s, from each repeat's first arrival "
       "to its last token.", IT, figure=True, lo=0),
    _c("goodput_rps", F, "Goodput: requests that met both SLOs (TTFT and TPOT) / s, over the same span.", IT,
       figure=True, lo=0),
    _c("goodput_frac", F, "Share of requests that met both SLOs, 0-1.", IT, figure=True, lo=0, hi=1),
    _c("queue_s_mean", F, "Queueing per request: E2E less prefill and decode (arrival to the engine scheduling "
       "it), mean, s.", IT, figure=True, lo=0),
    _c("prefill_s_mean", F, "Prefill per request: scheduled to first token (vLLM's own request stats; "
       "transformers: the prefill forward), mean, s.", IT, figure=True, lo=0),
    _c("decode_s_mean", F, "Decode per request: first token to last, mean, s.", IT, figure=True, lo=0),
    _c("prefill_energy_j", F, "Energy of the engine steps attributed to prefill, J (docs/serving-load.md).", IT,
       figure=True, lo=0),
    _c("decode_energy_j", F, "Energy of the engine steps attributed to decode, J.", IT, figure=True, lo=0),
    _c("prefill_energy_j_per_token", F, "prefill_energy_j / prompt tokens, J.", IT, figure=True, lo=0),
    _c("decode_energy_j_per_token", F, "decode_energy_j / generated tokens after each request's first, J.", IT,
       figure=True, lo=0),
    _c("kv_cache_dtype", S, "vLLM KV-cache dtype: auto (the model's) | fp8 | fp8_e4m3 | fp8_e5m2.", IT),
    _c("it_cv", F, "Coefficient of variation of IT over the repeats (noise flag).", IT, figure=True, lo=0),
    _c("repeats", I, "Measured repeats of the load point.", IT, lo=0),
    _c("concurrency", I, "Requests kept in flight (offline: all of them, capped by the engine batch).", IT, lo=0),
    _c("batch_size", I, "Requests the engine may batch at this point: min(concurrency, vLLM max_num_seqs); transformers: the static batch.", IT, lo=0),
    _c("prompt_len", I, "Prompt tokens per request.", IT, lo=0),
    _c("output_len", I, "Generated tokens per request (fixed: min = max new tokens).", IT, lo=0),
    _c("engine", S, "Serving engine: vllm | transformers.", IT, enum=ENGINES),
    _c("engine_fallback", S, "Why the configured engine did not serve this cell (e.g. no int4 kernel in the CPU build of vLLM); null when it did.", IT),
    _c("running_peak", I, "Most requests vLLM's scheduler ran at once during the point (its own stats).", IT, lo=0),
    _c("kv_bytes_per_token", I, "KV-cache bytes one token holds over all layers (vLLM's KV cache spec; "
       "transformers: 2·L·groups·head_dim·bytes).", IT, lo=0),
    _c("kv_cache_budget_bytes", I, "KV-cache bytes the engine was asked to reserve (vLLM kv_cache_memory_bytes), "
       "sized for the largest load point of the engine load.", IT, lo=0),
    _c("mem_weights_gb", F, "Memory of the loaded weights, GB (the engine's parameter bytes; linear layers vLLM's CPU build repacked into kernel buffers counted by shape).", IT, figure=True, lo=0),
    _c("mem_kv_reserved_gb", F, "KV cache the engine reserved, GB (its KV cache tensors).", IT, figure=True, lo=0),
    _c("mem_kv_peak_used_gb", F, "KV cache in use at the point's peak, GB (scheduler's KV-cache usage × blocks).",
       IT, figure=True, lo=0),
    _c("mem_runtime_gb", F, "AMU − weights − KV reserved, GB: the serving runtime's own memory.", IT, figure=True),
    _c("weight_bits", I, "Nominal bits per weight of the precision (bf16/fp16 16, fp8/int8 8, int4 4).", QT + IT, lo=1),
    _c("quant_method", S, "How the checkpoint was made: cast (bf16/fp16) | rtn | gptq | awq (int4, int8) | fp8_dynamic (fp8) | smoothquant_gptq | smoothquant_rtn (int8).", QT + IT, enum=QUANT_METHODS),
    _c("mcr_nominal", F, "MCR with the nominal bit ratio (e.g. 16/4).", QT + IT, figure=True, lo=0),
    _c("mcr_disk", F, "MCR with the measured on-disk size ratio.", QT + IT, figure=True, lo=0),
    # quality
    _c("val_loss", F, "Validation mean token NLL (nats).", PT + FT, figure=True, lo=0),
    _c("ppl", F, "Validation perplexity, exp(val_loss).", PT, figure=True, lo=1),
    _c("train_loss", F, "Mean training loss over the last logged steps.", PT + FT, figure=True, lo=0),
    _c("accuracy", F, "Mean accuracy over the evaluated tasks, 0-1.", FT + QT + IT, figure=True, lo=0, hi=1),
    _c("fid_ppl", F, "Held-out perplexity of this precision through the serving engine (effbench.fidelity); joined at aggregation.", QT + IT, figure=True, lo=1),
    _c("fid_kl_mean", F, "Mean KL(baseline || this precision) of next-token distributions on held-out text, nats; joined at aggregation.", QT + IT, figure=True, lo=0),
    _c("fid_kl_p99", F, "99th percentile over positions of that KL, nats; joined at aggregation.", QT + IT, figure=True, lo=0),
    _c("fid_top1_agreement", F, "Share of held-out positions where this precision's top-1 token is the baseline's; joined at aggregation.", QT + IT, figure=True, lo=0, hi=1),
    _c("fid_verdict", S, "Fidelity to the baseline precision against its thresholds (effbench.fidelity.measures.THRESHOLDS): pass | fail | baseline; joined at aggregation.", QT + IT, enum=FIDELITY_VERDICTS),
    _c("quality_vs_baseline", S, "Accuracy against the baseline precision: significant | not significant (inside 2 combined standard errors) | baseline; joined at aggregation.", QT + IT, enum=QUALITY_LABELS),
    _c("accuracy_tasks_json", S, "Per-task scores {task: {metric, value, stderr, n}} from lm-evaluation-harness (JSON).", FT + QT + IT),
    # raw counts
    _c("steps", I, "Optimizer steps measured.", PT + FT, lo=0),
    _c("resumed_from_step", I, "Step the run resumed from after an interruption (0 = fresh start).", PT + FT, lo=0),
    _c("tokens", I, "Tokens processed in the measured window.", PT + FT + IT, lo=0),
    _c("samples", I, "Samples (sequences, requests) processed in the measured window.", lo=0),
    _c("seconds", F, "Wall time of the measured window, s.", required=True, lo=0),
    _c("params_total", I, "All parameters.", required=True, lo=0),
    _c("params_active", I, "Parameters active per token (MoE: top-k experts only).", PT, lo=0),
    _c("params_non_embedding", I, "Parameters outside the embedding and output layers.", PT, lo=0),
    _c("params_trainable", I, "Trainable parameters.", FT, lo=0),
    _c("params_trainable_frac", F, "Trainable parameters over all parameters (adapter included), 0-1.", FT, lo=0, hi=1),
    _c("flops_per_token", F, "Analytic training FLOPs per token: 6·(N_active non-embedding + output projection) + the family's token-mixing term (12·L·H·S for attention; docs/pretrain-families.md).", PT, lo=0),
    _c("model_family", S, "Pretraining model family: gpt (megatron-core GPTModel), gpt_neox, mamba2 or rwkv (transformers classes).", PT, enum=("gpt", "gpt_neox", "mamba2", "rwkv")),
    _c("kernel_path", S, "Which implementation computed the model's token mixing (e.g. a library's reference PyTorch path on a CPU, its CUDA kernels on a GPU).", PT),
    _c("disk_bytes", I, "Size on disk of the run's model artefact (checkpoint; fine-tuning: the saved adapter, or the whole model for freeze/full; quantized model).", lo=0),
    _c("seq_length", I, "Sequence length (context) used.", PT + FT + IT, lo=0),
    _c("settings_json", S, "The cell's resolved settings (JSON).", required=True),
    _c("settings_hash", S, "sha256 of settings_json.", required=True),
    _c("parallel_json", S, "Parallel layout (world size, data/tensor/pipeline parallel) as JSON."),
    # provenance
    _c("config_hash", S, "sha256 of the whole validated config.", required=True),
    _c("code_version", S, "git describe of the pipeline, or a hash of its sources when not in git.", required=True),
    _c("library_versions_json", S, "Versions of the libraries this stage imported (JSON).", required=True),
    _c("host", S, "Host name.", required=True),
    _c("device_kind", S, "cuda | cpu.", required=True, enum=DEVICE_KINDS),
    _c("device_name", S, "GPU model from NVML, or the CPU.", required=True),
    _c("device_count", I, "Devices measured.", required=True, lo=0),
    _c("driver_version", S, "NVIDIA driver version (null on CPU)."),
    _c("seed", I, "Random seed.", required=True, lo=0),
    _c("started_at", T, "Start of the run (UTC).", required=True),
    _c("ended_at", T, "End of the run (UTC).", required=True),
    _c("slurm_job_id", S, "SLURM_JOB_ID when run under Slurm."),
    _c("slurm_node", S, "SLURMD_NODENAME when run under Slurm."),
    _c("slurm_partition", S, "SLURM_JOB_PARTITION when run under Slurm."),
    _c("slurm_gpus", S, "GPU indices Slurm allocated (SLURM_STEP_GPUS or SLURM_JOB_GPUS); the GPU model is device_name."),
    # isolation (effbench.isolation): who else ran on the host while this run was measured
    _c("alone", B, "True when no other registered effbench job overlapped this run on its host.", STAGES),
    _c("concurrent_jobs", I, "How many other effbench jobs overlapped this run on its host.", STAGES, lo=0),
    _c("concurrent_jobs_json", S, "JSON list of the overlapping jobs (stage/cell)."),
    _c("host_load_1m_start", F, "Host 1-minute load average when the run started (foreign load the registry cannot see).", lo=0),
    _c("host_load_1m_end", F, "Host 1-minute load average when the run ended.", lo=0),
    _c("host_cpus", I, "Logical CPUs of the host (to read the load averages against).", lo=0),
    _c("foreign_cpu_s", F, "CPU-seconds the host's CPUs were busy outside this job's process tree during the "
       "measured window (other processes, interrupts, hypervisor steal): /proc/stat's busy time less the tree's "
       "utime+stime at the window's edges (effbench.isolation).", figure=True, lo=0),
    _c("foreign_cpu_frac", F, "foreign_cpu_s over the window's core-seconds (window seconds × the host's CPUs), 0-1.",
       figure=True, lo=0, hi=1),
    _c("foreign_load", B, "True when foreign_cpu_s averaged more than measure.foreign_cpu_max_cores cores (default "
       "0.25) over the measured window: work the job registry cannot see shared the host (tables mark it [S]; "
       "alone still means no other effbench job)."),
)

SAMPLE_COLUMNS: tuple[Column, ...] = (
    _c("run_id", S, "The record's run_id."),
    _c("t_s", F, "Seconds since the monitor started."),
    _c("wall_time", F, "Unix time of the sample."),
    _c("backend", S, "nvml | host."),
    _c("device", I, "Device index within the run."),
    _c("key", S, "mem_used_bytes | mem_total_bytes | util_percent | power_w."),
    _c("value", F, "The reading."),
)
