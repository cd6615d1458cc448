"""Per-stage table, leaderboard and Pareto specifications.

Adding a stage's tables means adding a :class:`StageSpec` here, not code elsewhere. A spec
says which record columns make up a row's identity (``row_keys``), which record columns
are printed and how (``columns``), which column is the quality figure, how leaderboard
groups are formed and which metrics are scored, and which (x, y) pairs get Pareto plots.
Every name refers to a column of :mod:`effbench.record` or one the serving aggregation joins
(:data:`JOINED`); :func:`check_spec` verifies that.

Number formats (``ColumnSpec.fmt``): ``f<N>`` fixed with N decimals, ``sig<N>`` N
significant digits, ``sci<N>`` scientific with N significant digits, ``int``, ``params``
(1.54B / 494M / 7.4K), ``bytes_gb`` (bytes printed as GB), ``str``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..record import RECORD_SCHEMA, STAGES

LOWER, HIGHER = "lower", "higher"
# Figures read from the energy counter: a table notes them when their window was short.
ENERGY_COLUMNS = frozenset({"aec_w", "energy_j", "energy_j_per_token", "energy_j_per_sample", "prefill_energy_j",
                            "decode_energy_j", "prefill_energy_j_per_token", "decode_energy_j_per_token"})
# The served precisions in print order: the paper's (bf16, fp16, int4) with the beyond-the-paper
# fp8 and int8 (W8A8) between the 16-bit ones and int4, by bits.
PRECISION_ORDER = ("bf16", "fp16", "fp8", "int8", "int4")
_FMT = re.compile(r"^(f|sig|sci)(\d+)$|^(int|params|bytes_gb|str)$")


@dataclass(frozen=True)
class ColumnSpec:
    """One printed column: record column, header (with unit), number format, direction."""

    column: str
    header: str
    fmt: str = "sig4"
    better: str | None = None  # "lower" | "higher" | None (not a scored metric)
    metric: bool = True  # False: descriptive (Params, Context); not replaced by OOM/failed
    label: str | None = None  # axis label; defaults to the header

    @property
    def axis_label(self) -> str:
        text = self.label or self.header
        if self.better:
            text += f", {self.better} is better"
        return text


@dataclass(frozen=True)
class StageSpec:
    stage: str
    title: str
    row_keys: tuple[str, ...]  # record columns shown first and used to sort rows
    key_headers: tuple[str, ...]  # their headers
    columns: tuple[ColumnSpec, ...]
    quality: str  # the quality column (its direction is the column's ``better``)
    group_by: tuple[str, ...]  # leaderboard groups; may name "size_band" (derived from ``bands``)
    leaderboard: tuple[str, ...]  # scored metrics (each a column with ``better`` set)
    pareto: tuple[tuple[str, str], ...]  # (x column, y column) pairs
    key_order: tuple[tuple[str, tuple[str, ...]], ...] = ()  # preferred order of key values
    bands: tuple[tuple[float, str], ...] = ()  # (upper bound of params_total, label), ascending
    band_of: str = "params_total"
    label_column: str = "cell"  # point labels in plots, row names in leaderboards
    notes: tuple[str, ...] = field(default=())  # printed under the table
    table_name: str | None = None  # file stem of the table; default: the stage

    @property
    def file_stem(self) -> str:
        return self.table_name or self.stage

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(f"{self.stage} spec has no column {name!r}")

    @property
    def quality_lower_is_better(self) -> bool:
        return self.column(self.quality).better == LOWER

    @property
    def metric_columns(self) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if c.metric)

    def order_of(self, key: str) -> tuple[str, ...]:
        return dict(self.key_order).get(key, ())

    def band(self, value: float | None) -> str | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        for upper, label in self.bands:
            if value <= upper:
                return label
        return self.bands[-1][1] if self.bands else None


DERIVED = ("size_band",)
# Columns the serving aggregation joins onto its rows that no record holds (effbench.aggregate.quality):
# a spec may print them beside the record's own columns.
JOINED = {
    "perf_tasks": "The tasks Perf averages: those measurable at the model's baseline precision.",
    "accuracy_drop": "1 - Perf / the baseline's Perf on the same tasks, with the paired delta-method interval.",
    "quality_p": "Two-sided p-value of the paired exact test (McNemar) of Perf against the baseline.",
    "quality_test": "The test behind 'Perf vs baseline': McNemar exact on the paired items, or the labelled "
                    "unpaired fallback.",
}


def check_spec(spec: StageSpec) -> None:
    """Raise ValueError naming every inconsistency between a spec and the record schema."""
    names = set(RECORD_SCHEMA.names) | set(JOINED)
    problems: list[str] = []
    if spec.stage not in STAGES:
        problems.append(f"stage {spec.stage!r} not in {STAGES}")
    if len(spec.row_keys) != len(spec.key_headers):
        problems.append("row_keys and key_headers differ in length")
    cols = {c.column for c in spec.columns}
    for c in spec.columns:
        if c.column not in names:
            problems.append(f"column {c.column!r} is not in the record schema")
        if not _FMT.match(c.fmt):
            problems.append(f"column {c.column!r} has unknown format {c.fmt!r}")
        if c.better not in (None, LOWER, HIGHER):
            problems.append(f"column {c.column!r} has direction {c.better!r}")
    for k in (*spec.row_keys, spec.label_column, spec.band_of):
        if k not in names:
            problems.append(f"key {k!r} is not in the record schema")
    for k in spec.group_by:
        if k not in names and k not in DERIVED:
            problems.append(f"group key {k!r} is neither a record column nor derived")
    if "size_band" in spec.group_by and not spec.bands:
        problems.append("group_by names size_band but the spec has no bands")
    if spec.quality not in cols or spec.column(spec.quality).better is None:
        problems.append(f"quality column {spec.quality!r} must be a printed column with a direction")
    for m in spec.leaderboard:
        if m not in cols or spec.column(m).better is None:
            problems.append(f"leaderboard metric {m!r} must be a printed column with a direction")
    for x, y in spec.pareto:
        for a in (x, y):
            if a not in cols or spec.column(a).better is None:
                problems.append(f"Pareto axis {a!r} must be a printed column with a direction")
    if problems:
        raise ValueError(f"spec {spec.stage}: " + "; ".join(problems))


# --- the stages ------------------------------------------------------------------------

_AMU = ColumnSpec("amu_gb", "AMU (GB)", "f2", LOWER, label="AMU, average memory used (GB)")
_AEC = ColumnSpec("aec_w", "AEC (W)", "sig4", LOWER, label="AEC, average power (W)")
_AL_ITER = ColumnSpec("al_s_per_iter", "AL (s/iter)", "sig4", LOWER, label="AL, average latency (s/iter)")

PRETRAIN = StageSpec(
    stage="pretrain",
    title="Pretraining: attention and architecture variants",
    row_keys=("size", "technique"),
    key_headers=("Size", "Method"),
    columns=(
        # gpt: megatron-core's GPTModel; gpt_neox / mamba2 / rwkv: transformers' classes (the
        # record's kernel_path says which implementation ran).
        ColumnSpec("model_family", "Family", "str", metric=False),
        ColumnSpec("params_total", "Params", "params", metric=False),
        ColumnSpec("seq_length", "Context", "int", metric=False),
        ColumnSpec("ppl", "PPL", "f2", LOWER, label="Validation perplexity (PPL)"),
        _AMU,
        _AL_ITER,
        ColumnSpec("tt_tokens_per_param_s", "TT (tok/param/s)", "sci3", HIGHER),
        _AEC,
        ColumnSpec("mfu_frac", "MFU", "sig3", HIGHER),
        ColumnSpec("energy_j_per_token", "Energy (J/token)", "sci3", LOWER),
    ),
    quality="ppl",
    group_by=("size",),
    leaderboard=("ppl", "amu_gb", "al_s_per_iter", "tt_tokens_per_param_s", "aec_w"),
    pareto=(("amu_gb", "ppl"), ("al_s_per_iter", "ppl"), ("aec_w", "ppl")),
    key_order=(("technique", ("mha", "mqa", "gqa", "mla", "nsa", "moe", "abs", "sinusoidal", "relative", "nope",
                              "pythia", "mamba", "rwkv")),),
)

FINETUNE = StageSpec(
    stage="finetune",
    title="Fine-tuning: parameter-efficient methods",
    row_keys=("model", "task", "method"),
    key_headers=("Model", "Task", "Method"),
    columns=(
        ColumnSpec("params_total", "Params", "params", metric=False),
        ColumnSpec("params_trainable", "Trainable", "params", metric=False),
        ColumnSpec("params_trainable_frac", "Trainable share", "sig3", metric=False),
        ColumnSpec("train_loss", "Loss", "sig4", LOWER, label="Training loss"),
        _AMU,
        ColumnSpec("pcu_frac", "PCU", "sig3", HIGHER, label="PCU, compute utilisation (0-1)"),
        _AL_ITER,
        ColumnSpec("st_samples_per_param_s", "ST (samples/param/s)", "sci3", HIGHER),
        _AEC,
        ColumnSpec("energy_j_per_sample", "Energy (J/sample)", "sig4", LOWER),
        ColumnSpec("val_loss", "Held-out loss", "sig4", LOWER, label="Held-out loss"),
        ColumnSpec("accuracy", "Exact match", "sig3", HIGHER, label="Exact-match accuracy (0-1)"),
        ColumnSpec("disk_bytes", "Saved (GB)", "bytes_gb", LOWER),
    ),
    # Quality is the held-out loss (LlamaFactory's eval_loss, with its interval over evaluation
    # batches): the training loss is of the batches the method fitted, and has no interval.
    quality="val_loss",
    group_by=("size_band", "task"),
    leaderboard=("val_loss", "amu_gb", "pcu_frac", "al_s_per_iter", "st_samples_per_param_s", "aec_w"),
    pareto=(("amu_gb", "val_loss"), ("al_s_per_iter", "val_loss"), ("aec_w", "val_loss")),
    key_order=(("method", ("lora", "loraplus", "rslora", "dora", "pissa", "freeze", "full")),),
    # the paper's bands: 1B-3B, 7B-8B, 14B-24B
    bands=((4.5e9, "up to 4.5B"), (1.2e10, "4.5B-12B"), (math.inf, "over 12B")),
)

# The paper's quantization table (Table 9: Perf | AMU | AL | IT | AEC | MCR) is measured while
# serving, so it is the inference stage's layout, at one load point (inference.table_load_point).
# Perf, MCR and the size columns are joined from the evaluation scores and the quantize
# records at aggregation (effbench.aggregate.serving).
_MCR_NOTE = ("MCR = (size_orig / size_comp) × (Perf_comp / Perf_orig) against the baseline precision; "
             "the MCR column uses the nominal bit ratio (16/4 for int4, as the paper; 16/8 for fp8 and int8), "
             "MCR (disk) the measured "
             "on-disk bytes of the weights (*.safetensors). Perf ± is its 95 % interval (the tasks' standard "
             "errors); MCR ± and Drop ± the delta method's on the Perf ratio with the covariance of the two "
             "precisions' per-item results (paired: both score the same items).")
_PERF_NOTE = ("Perf = the mean over the tasks measurable at the model's baseline precision (z > 3 above chance and "
              "above both controls, question-blind and swapped subject), the same tasks for every precision of the model (Perf tasks); "
              "no measurable task: Perf and all compared on it are n/a. Each task's chance, controls and z: "
              "tables/inference_tasks.md (docs/quality.md).")
_TEST_NOTE = ("Perf vs baseline: McNemar's exact test on the items scored at both precisions (the sign-flip test "
              "when a tie counted 1/k makes a difference fractional), significant at p < 0.05; p is its two-sided "
              "p-value. 'unpaired' (no per-item results, an older scores.json): the fallback, significant when the "
              "difference exceeds 2 combined standard errors (docs/noise.md).")
_FIDELITY_NOTE = ("Fidelity to the baseline precision, independent of task accuracy (held-out perplexity, KL of the "
                  "next-token distributions, top-1 agreement): tables/fidelity.md.")
_PERF = ColumnSpec("accuracy", "Perf", "sig4", HIGHER, label="Benchmark accuracy (0-1, mean over measurable tasks)")
_PERF_TASKS = ColumnSpec("perf_tasks", "Perf tasks", "str", metric=False)
_COMPARE = (
    ColumnSpec("quality_vs_baseline", "Perf vs baseline", "str", metric=False),
    ColumnSpec("accuracy_drop", "Drop vs baseline", "sig3", metric=False, label="1 - Perf / baseline Perf"),
    ColumnSpec("quality_p", "p (paired)", "sig2", metric=False),
    ColumnSpec("quality_test", "Test", "str", metric=False),
)
_MCR = ColumnSpec("mcr_nominal", "MCR", "sig4", HIGHER, label="MCR, nominal bits")
_MCR_DISK = ColumnSpec("mcr_disk", "MCR (disk)", "sig4", HIGHER, label="MCR, on-disk bytes")
_IT = ColumnSpec("it_tokens_per_s", "IT (tok/s)", "sig4", HIGHER, label="IT, generated tokens/s")
# Fidelity to the baseline on held-out text (docs/fidelity.md), independent of task accuracy.
_FIDELITY = (
    ColumnSpec("fid_ppl", "Held-out PPL", "sig4", LOWER),
    ColumnSpec("fid_kl_mean", "KL mean", "sci2", LOWER, label="KL(baseline || precision), mean over positions (nats)"),
    ColumnSpec("fid_kl_p99", "KL p99", "sci2", LOWER, label="KL(baseline || precision), p99 over positions (nats)"),
    ColumnSpec("fid_top1_agreement", "Top-1 agree", "sig4", HIGHER, label="Top-1 agreement with the baseline"),
    ColumnSpec("fid_verdict", "Fidelity", "str", metric=False),
)
_AL_REQ = ColumnSpec("al_s_per_request", "AL (s/req)", "sig4", LOWER, label="AL, average latency (s/request)")
# Which precision set a row belongs to: the paper's, or beyond it (fp8, int8: quantize.beyond_paper).
_SET = ColumnSpec("precision_set", "Set", "str", metric=False)
_GOODPUT = ColumnSpec("goodput_rps", "Goodput (req/s)", "sig3", HIGHER,
                      label="Goodput, requests/s that met both SLOs (TTFT and TPOT)")
_GOODPUT_FRAC = ColumnSpec("goodput_frac", "Goodput share", "sig3", HIGHER,
                           label="Share of requests that met both SLOs (0-1)")
_SET_NOTE = ("Set: paper = the paper's precisions (bf16, fp16, int4); beyond_paper = fp8 and int8 (W8A8), "
             "measured beyond the paper (quantize.beyond_paper): compare them with the paper's rows knowing the "
             "paper has no such row.")
_GOODPUT_NOTE = ("Goodput = requests that met both the TTFT and the TPOT SLO of the load point per second, and their "
                 "share of all requests (DistServe's goodput); n/a where the load point sets no SLO. The SLOs, the "
                 "arrival process and the prefill/decode split of every load point: tables/inference_latency.md.")

INFERENCE = StageSpec(
    stage="inference",
    title="Quantization and inference (the paper's Table 9)",
    row_keys=("model", "precision"),
    key_headers=("Model", "Precision"),
    columns=(
        _SET,
        _PERF,
        _AMU,
        _AL_REQ,
        _IT,
        _GOODPUT,
        _GOODPUT_FRAC,
        _AEC,
        _MCR,
        _MCR_DISK,
        *_COMPARE,
        _PERF_TASKS,
        *_FIDELITY,
        ColumnSpec("energy_j_per_token", "Energy (J/token)", "sig4", LOWER),
        ColumnSpec("load_point", "Load", "str", metric=False),
    ),
    quality="accuracy",
    group_by=("model",),
    leaderboard=("accuracy", "amu_gb", "al_s_per_request", "it_tokens_per_s", "aec_w", "mcr_nominal"),
    pareto=(("it_tokens_per_s", "accuracy"), ("amu_gb", "accuracy"), ("aec_w", "accuracy")),
    key_order=(("precision", PRECISION_ORDER),),
    notes=(_PERF_NOTE, _MCR_NOTE, _TEST_NOTE, _FIDELITY_NOTE, _GOODPUT_NOTE, _SET_NOTE),
)

# Every load point: the serving latencies (vLLM / MLPerf style) behind the throughput-latency curves.
_LAT = tuple(
    ColumnSpec(f"{m}_s_{s}", f"{m.upper()} {s} (s)", "sig3", LOWER)
    for m in ("ttft", "tpot", "itl", "e2e") for s in ("mean", "p50", "p90", "p99")
)
INFERENCE_LATENCY = StageSpec(
    stage="inference",
    title="Inference: latency at every load point",
    row_keys=("model", "precision", "load_point"),
    key_headers=("Model", "Precision", "Load"),
    columns=(
        _SET,
        ColumnSpec("engine", "Engine", "str", metric=False),
        ColumnSpec("load_mode", "Mode", "str", metric=False),
        ColumnSpec("request_rate_rps", "Rate (req/s)", "sig3", metric=False, label="Offered request rate (req/s)"),
        ColumnSpec("arrivals", "Arrivals", "str", metric=False),
        ColumnSpec("slo_ttft_ms", "SLO TTFT (ms)", "sig3", metric=False),
        ColumnSpec("slo_tpot_ms", "SLO TPOT (ms)", "sig3", metric=False),
        ColumnSpec("concurrency", "Concurrency", "int", metric=False),
        ColumnSpec("prompt_len", "Prompt", "int", metric=False),
        ColumnSpec("output_len", "Output", "int", metric=False),
        ColumnSpec("kv_cache_dtype", "KV dtype", "str", metric=False),
        _IT,
        ColumnSpec("it_cv", "IT CV", "sig2", LOWER),
        ColumnSpec("request_throughput_rps", "Req/s", "sig3", HIGHER,
                   label="Achieved request throughput (completed requests/s)"),
        _GOODPUT,
        _GOODPUT_FRAC,
        _AL_REQ,
        *_LAT,
        ColumnSpec("queue_s_mean", "Queue (s)", "sig3", LOWER, label="Mean queueing per request (s)"),
        ColumnSpec("prefill_s_mean", "Prefill (s)", "sig3", LOWER, label="Mean prefill per request (s)"),
        ColumnSpec("decode_s_mean", "Decode (s)", "sig3", LOWER, label="Mean decode per request (s)"),
        _AMU,
        _AEC,
        ColumnSpec("energy_j_per_token", "Energy (J/token)", "sig4", LOWER),
        ColumnSpec("prefill_energy_j_per_token", "Prefill energy (J/prompt token)", "sig3", LOWER),
        ColumnSpec("decode_energy_j_per_token", "Decode energy (J/token)", "sig3", LOWER),
    ),
    quality="it_tokens_per_s",
    group_by=("model",),
    leaderboard=(),
    pareto=(),
    key_order=(("precision", PRECISION_ORDER),),
    table_name="inference_latency",
    notes=("TTFT, TPOT (per request, first token excluded), ITL (pooled token gaps) and E2E from client-side "
           "token arrival times; IT = Σ generated tokens / Σ run time over the repeats; IT CV = spread over "
           "the repeats.",
           "Mode: offline (every request at once) | concurrency (closed loop: N in flight) | rate (open loop: "
           "requests arrive at Rate req/s, Poisson or constant gaps; a swept rate is the point <name>@<rate>). "
           "Req/s = completed requests / s; Goodput = those that met both SLOs (TTFT and TPOT) / s, and their "
           "share; n/a where the point sets no SLO.",
           "Queue + Prefill + Decode = E2E per request (means): queue = waiting to be scheduled, prefill = "
           "scheduled to first token, decode = first token to last; the prefill/decode energy is that of the "
           "engine steps attributed to each (docs/serving-load.md), per prompt token and per generated token "
           "after the first.", _SET_NOTE),
)

QUANTIZE = StageSpec(
    stage="quantize",
    title="Quantization: the checkpoints each precision serves",
    row_keys=("model", "precision"),
    key_headers=("Model", "Precision"),
    columns=(
        _SET,
        ColumnSpec("params_total", "Params", "params", metric=False),
        ColumnSpec("weight_bits", "Bits", "int", metric=False),
        ColumnSpec("quant_method", "Method", "str", metric=False),
        ColumnSpec("disk_bytes", "Size (GB)", "bytes_gb", LOWER),
        _PERF,
        _PERF_TASKS,
        _MCR,
        _MCR_DISK,
        *_FIDELITY,
        ColumnSpec("seconds", "Time (s)", "sig3", LOWER, label="Quantization wall time (s)"),
        _AMU,
        _AEC,
    ),
    quality="accuracy",
    group_by=("model",),
    leaderboard=("accuracy", "disk_bytes", "mcr_nominal"),
    pareto=(("disk_bytes", "accuracy"),),
    key_order=(("precision", PRECISION_ORDER),),
    notes=(_PERF_NOTE, _MCR_NOTE, "AMU, AEC and time are those of the quantization job (casting, int4 or int8 "
                      "calibration, fp8 dynamic scaling), not of serving.", _FIDELITY_NOTE, _SET_NOTE),
)

SPECS: Mapping[str, StageSpec] = {s.stage: s for s in (PRETRAIN, FINETUNE, QUANTIZE, INFERENCE)}


def get_spec(stage: str) -> StageSpec:
    try:
        return SPECS[stage]
    except KeyError:
        raise ValueError(f"no aggregation spec for stage {stage!r}; known: {sorted(SPECS)}") from None


for _s in (*SPECS.values(), INFERENCE_LATENCY):
    check_spec(_s)
