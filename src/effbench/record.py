"""The one record schema: one Parquet row per run, and a long Parquet of its raw samples.

This module is the single place the schema is defined; docs/record-schema.md is
generated from it (``python -m effbench.record > docs/record-schema.md``) and a test
checks that the two agree. Column names carry their unit. A measured figure ``x`` has
two companions: ``x__source`` (where it came from) and ``x__missing`` (why it is null,
null when measured), so a missing value is never confused with a zero.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .measure.figure import Figure

# Versions only ever add columns: 2 added fine-tuning, serving and Slurm columns to 1; 3 added
# intervals, the energy-window flag and the isolation columns; 4 the pretraining model family and
# kernel path. The reader
# reads older records (their absent columns are null) and refuses newer ones.
SCHEMA_VERSION = 4
STAGES = ("pretrain", "finetune", "quantize", "inference")
STATUSES = ("ok", "oom", "failed")
PRECISIONS = ("fp32", "bf16", "fp16", "int4")  # training precisions, and the served ones
ENGINES, DEVICE_KINDS = ("vllm", "transformers"), ("cuda", "cpu")
QUANT_METHODS = ("cast", "rtn", "gptq", "awq")
QUALITY_LABELS = ("significant", "not significant", "baseline")  # spread.difference_label, or the baseline
FIDELITY_VERDICTS = ("pass", "fail", "baseline")  # effbench.fidelity.measures.VERDICTS
ALL = frozenset(STAGES)
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
    _c("precision", S, "bf16 | fp16 | int4 (quantization, inference) or training precision.", ALL, enum=PRECISIONS),
    _c("load_point", S, "Inference load point name from the config.", IT),
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
    _c("weight_bits", I, "Nominal bits per weight of the precision (bf16/fp16 16, int4 4).", QT + IT, lo=1),
    _c("quant_method", S, "How the checkpoint was made: cast (bf16/fp16) | rtn | gptq | awq (int4).", QT + IT, enum=QUANT_METHODS),
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


def _arrow_schema() -> pa.Schema:
    fields: list[pa.Field] = []
    for c in COLUMNS:
        fields.append(pa.field(c.name, c.type))
        if c.figure:
            fields.append(pa.field(c.name + "__source", S))
            fields.append(pa.field(c.name + "__missing", S))
            fields += [pa.field(c.name + s, t) for s, t in CI_SUFFIXES]
    return pa.schema(fields, metadata={b"effbench_schema_version": str(SCHEMA_VERSION).encode()})


RECORD_SCHEMA = _arrow_schema()
SAMPLES_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in SAMPLE_COLUMNS])
_BY_NAME = {c.name: c for c in COLUMNS}
FIGURE_COLUMNS = tuple(c.name for c in COLUMNS if c.figure)


class SchemaError(ValueError):
    pass


def flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """Expand Figure values into their value / __source / __missing columns."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Figure):
            out.update(v.columns(k))
        else:
            out[k] = v
    return out


def _value_problems(name: str, v: Any, c: Column) -> list[str]:
    """What is wrong with one non-null value of column ``c`` (under ``name``)."""
    if c.enum:
        return [] if v in c.enum else [f"column {name} {v!r} not in {c.enum}"]
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return []  # a wrong type is Arrow's to refuse
    if not math.isfinite(v):
        return [f"column {name} is {v}, not a finite number"]
    if c.lo is not None and v < c.lo:
        return [f"column {name} is {v}, below its minimum {c.lo:g}"]
    if c.hi is not None and v > c.hi:
        return [f"column {name} is {v}, above its maximum {c.hi:g}"]
    return []


def _interval_problems(name: str, row: Mapping[str, Any]) -> list[str]:
    lo, hi, n = (row.get(name + s) for s in ("__ci_low", "__ci_high", "__ci_n"))
    out = [f"column {name}{s} is {x}, not a finite number" for s, x in (("__ci_low", lo), ("__ci_high", hi))
           if isinstance(x, numbers.Real) and not math.isfinite(x)]
    if not out and isinstance(lo, numbers.Real) and isinstance(hi, numbers.Real) and lo > hi:
        out.append(f"column {name}__ci_low {lo} is above {name}__ci_high {hi}")
    if isinstance(n, numbers.Real) and n < 1:
        out.append(f"column {name}__ci_n is {n}, below its minimum 1")
    return out


def problems(row: Mapping[str, Any], version: int = SCHEMA_VERSION) -> list[str]:
    """Every problem with a record row (flattened), each naming its column: the row's identity,
    the columns its stage and status need, and each value against its column's enum and range.
    ``version``: what the row's schema_version must be (a file's: its metadata's)."""
    out: list[str] = []
    names = set(RECORD_SCHEMA.names)
    unknown = sorted(set(row) - names)
    if unknown:
        out.append(f"unknown columns {unknown}")
    stage, status = row.get("stage"), row.get("status")
    out += [f"column {n} is missing" for n in ("stage", "status") if row.get(n) is None]
    if row.get("schema_version") not in (None, version):
        out.append(f"column schema_version is {row.get('schema_version')} but the file's schema version is "
                        f"{version}")
    for c in COLUMNS:
        if row.get(c.name) is not None and c.name != "schema_version":
            out += _value_problems(c.name, row[c.name], c)
        if c.figure:
            out += _interval_problems(c.name, row)
        applies = stage in c.stages
        if not applies and row.get(c.name) is not None:
            out.append(f"column {c.name} does not apply to stage {stage}")
        if applies and c.required and status == "ok" and row.get(c.name) is None:
            out.append(f"required column {c.name} is missing")
        reported_null = c.name in row and row[c.name] is None
        if c.figure and applies and status == "ok" and reported_null and not row.get(c.name + "__missing"):
            out.append(f"figure {c.name} is null without a reason in {c.name}__missing")
    if status in STATUSES and status != "ok" and not row.get("status_detail"):
        out.append(f"status {status} needs a status_detail")
    return out


def validate(row: Mapping[str, Any]) -> None:
    """Raise SchemaError naming every problem with a record row (already flattened)."""
    found = problems(row)
    if found:
        raise SchemaError("record does not match schema v%d: %s" % (SCHEMA_VERSION, "; ".join(found)))


def write_record(path: Path, values: Mapping[str, Any]) -> None:
    """Validate and atomically write one record row (a killed job never leaves a half file)."""
    row = {"schema_version": SCHEMA_VERSION, **flatten(values)}
    validate(row)
    table = pa.Table.from_pylist([{n: row.get(n) for n in RECORD_SCHEMA.names}], schema=RECORD_SCHEMA)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


def write_samples(path: Path, run_id: str, rows: list[dict[str, Any]]) -> None:
    data = [{**r, "run_id": run_id} for r in rows]
    table = pa.Table.from_pylist([{n: r.get(n) for n in SAMPLES_SCHEMA.names} for r in data], schema=SAMPLES_SCHEMA)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


def read_record(path: Path) -> "pa.Table":
    """Read one record file as the current schema. A record of an earlier schema version is read
    with the columns it predates set to null (with a warning naming the file); an unreadable
    file, a newer or missing version, a missing required column, a column of the wrong type or a
    row the writer would refuse (:func:`problems`: an enum, a range, a NaN, a schema_version other
    than the file's) is a SchemaError naming the file (and the column)."""
    try:
        t = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise SchemaError(f"{path}: not a readable Parquet record: {e}") from e
    version = (t.schema.metadata or {}).get(b"effbench_schema_version")
    if version is None or not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise SchemaError(f"{path}: record schema version {version!r}, this code reads up to {SCHEMA_VERSION}")
    required = {c.name for c in COLUMNS if c.required}
    missing = [n for n in RECORD_SCHEMA.names if n not in t.schema.names]
    if set(missing) & required:
        raise SchemaError(f"{path}: required columns missing {sorted(set(missing) & required)}")
    if missing:
        warnings.warn(f"{path}: a schema v{int(version)} record, read as v{SCHEMA_VERSION}: "
                      f"{len(missing)} newer columns are null", stacklevel=3)
    columns, wrong = [], []
    for f in RECORD_SCHEMA:
        if f.name in missing:
            columns.append(pa.nulls(t.num_rows, f.type))
            continue
        col = t.column(f.name)
        try:  # a column Arrow can cast losslessly (e.g. int64 -> double) is taken as it is
            columns.append(col if col.type == f.type else col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            wrong.append(f"column {f.name} is {col.type}, the schema says {f.type} ({e})")
    if wrong:
        raise SchemaError(f"{path}: " + "; ".join(wrong))
    table = pa.Table.from_arrays(columns, schema=RECORD_SCHEMA)
    present = [n for n in RECORD_SCHEMA.names if n not in missing]  # a column it predates is not reported
    for row in table.select(present).to_pylist():
        # As the writer saw it: the values it was given (it writes null for a column it was not).
        found = problems({k: v for k, v in row.items() if v is not None}, int(version))
        if found:
            raise SchemaError(f"{path}: " + "; ".join(found))
    return table


def read_records(paths: Iterable[Path]) -> "pa.Table":
    """Read and check records (see :func:`read_record`), one table of all their rows."""
    tables = [read_record(p) for p in paths]
    return pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()


def markdown() -> str:
    """The schema as a Markdown document (docs/record-schema.md)."""
    lines = [
        f"# Record schema (version {SCHEMA_VERSION})",
        "",
        "Generated by `python -m effbench.record`; do not edit by hand. Each run writes one row to",
        f"`{RECORD_FILE}` and its raw samples to `{SAMPLES_FILE}`. Every column marked *figure* has two",
        "companions: `<name>__source` (where the value came from, e.g. `nvml_energy_counter`,",
        "`psutil_pss`, `wall_clock`) and `<name>__missing` (why it is null; null when measured), and",
        "its 95 % interval: `<name>__ci_low`, `<name>__ci_high` (double), `<name>__ci_n` (int64, the",
        "independent replicates behind it) and `<name>__ci_method` (e.g. `t_repeats`, `ratio_batch_means_k=8`,",
        "`delta_method`); all four are null when the figure's noise was not measured (docs/noise.md).",
        "*required* columns are non-null in every `ok` record of the stages listed.",
        "",
        "| column | type | stages | required | figure | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for c in COLUMNS:
        stages = "all" if c.stages == ALL else ", ".join(s for s in STAGES if s in c.stages)
        lines.append(
            f"| `{c.name}` | {c.type} | {stages} | {'yes' if c.required else ''} | {'yes' if c.figure else ''} | {c.doc} |"
        )
    lines += ["", f"## {SAMPLES_FILE}", "", "| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {c.doc} |" for c in SAMPLE_COLUMNS]
    return "\n".join(lines) + "\n"


def settings_json(settings: Mapping[str, Any]) -> str:
    """The one canonical text of a cell's settings: the record's ``settings_json`` (hashed into
    ``settings_hash``), the resume checkpoint's key and the stage scripts' ``--settings``."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


if __name__ == "__main__":
    sys.stdout.write(markdown())
