"""Consistency checks inside one real record, derived from the paper's definitions and the
record's own counts, never from the code that wrote it (no effbench.measure import).

Shared by every test folder (``tests`` is on pytest's pythonpath). Each check raises an
AssertionError naming the record and the relation that broke:

- the measured window lies inside the job's own start and end (and its samples too);
- training: AL × steps (the busy time) fits in the window; TT = tokens / params / busy,
  ST = samples / params / busy, tokens/s = tokens / busy;
- energy: J/token = energy / tokens, J/sample = energy / samples, AEC = energy / window;
  when energy is missing, everything derived from it is missing with a reason (never 0);
- MFU = FLOPs per token × tokens / (busy × peak × devices), the peak as the cell's
  settings state it (``measure.peak_flops``), the devices the layout's world size;
- serving: tokens = requests × output length; AL = TTFT + (output − 1) × TPOT (means; TPOT is
  (E2E − TTFT) / (tokens − 1) per request); mean ITL = mean TPOT (the gaps of a request sum to
  E2E − TTFT); IT = Σ tokens / Σ time lies between tokens / window and the bound that
  at most ``concurrency`` requests are in flight;
- fine-tuning: trainable parameters against the analytic count of the method
  (LoRA: r × (in + out) per target linear; DoRA adds out per target; freeze: the last layers);
- intervals: every figure ``X`` whose ``X__ci_low`` / ``X__ci_high`` are present contains its
  own value, and a figure that cannot be negative (time, memory, utilisation, throughput,
  energy, power, accuracy, MCR, loss: all but :data:`SIGNED_FIGURES`) has no negative bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

REL = 1e-9  # the record's figures are ratios of the same float64 sums: they agree to rounding


def _close(a: float, b: float, what: str, r: Mapping[str, Any], rel: float = REL) -> None:
    assert a is not None and b is not None, f"{r['cell']}: {what}: {a} vs {b}"
    assert math.isclose(a, b, rel_tol=rel, abs_tol=0.0), f"{r['cell']}: {what}: {a!r} != {b!r}"


def _missing(r: Mapping[str, Any], key: str) -> None:
    assert r[key] is None and r[key + "__missing"], f"{r['cell']}: {key} should be missing with a reason: {r[key]!r}"


def busy_seconds(r: Mapping[str, Any]) -> float:
    """The measured steps' own time: AL (s/iteration) × steps."""
    return r["al_s_per_iter"] * r["steps"]


def check_window(r: Mapping[str, Any], samples: Path | None = None) -> None:
    """The measured window inside the job: its length and every sample's time."""
    job = (r["ended_at"] - r["started_at"]).total_seconds()
    assert 0 < r["seconds"] <= job, f"{r['cell']}: window {r['seconds']} s vs job {job} s"
    if samples is not None:
        t = pq.read_table(samples, columns=["run_id", "wall_time"]).to_pydict()
        assert set(t["run_id"]) == {r["run_id"]}, f"{samples}: samples of another run: {set(t['run_id'])}"
        lo, hi = r["started_at"].timestamp(), r["ended_at"].timestamp()
        assert t["wall_time"] and lo <= min(t["wall_time"]) and max(t["wall_time"]) <= hi, \
            f"{r['cell']}: samples {min(t['wall_time'])}–{max(t['wall_time'])} outside the job {lo}–{hi}"


def check_energy(r: Mapping[str, Any], per: Mapping[str, int]) -> None:
    """AEC and energy per unit (``per``: {column: unit count}) from the window's energy."""
    derived = ["aec_w", *per]
    if r["energy_j"] is None:
        assert r["energy_j__missing"], f"{r['cell']}: energy null without a reason"
        for k in derived:
            _missing(r, k)
        return
    _close(r["aec_w"], r["energy_j"] / r["seconds"], "AEC = energy / window", r)
    for k, n in per.items():
        _close(r[k], r["energy_j"] / n, f"{k} = energy / {n}", r)


def stated_peak(r: Mapping[str, Any]) -> float | None:
    """The per-device dense peak the cell's settings state for its training precision."""
    s = json.loads(r["settings_json"])
    dtype = "bf16" if s["training"]["precision"] == "bf16" else "fp32"
    return ((s.get("measure") or {}).get("peak_flops") or {}).get(dtype)


def check_mfu(r: Mapping[str, Any], peak: float | None = None) -> None:
    """MFU from the record's counts and the stated peak (``peak``: the test's own statement, which
    must agree with the settings')."""
    stated = stated_peak(r)
    if peak is not None:
        assert stated == peak, f"{r['cell']}: settings state peak {stated}, the test {peak}"
    if stated is None:
        _missing(r, "mfu_frac")
        return
    devices = json.loads(r["parallel_json"])["world_size"]
    _close(r["mfu_frac"], r["flops_per_token"] * r["tokens"] / (busy_seconds(r) * stated * devices),
           f"MFU over {devices} device(s) at {stated} FLOP/s", r)


def check_training(r: Mapping[str, Any]) -> None:
    busy = busy_seconds(r)
    assert 0 < busy <= r["seconds"], f"{r['cell']}: busy {busy} s outside the window {r['seconds']} s"
    _close(r["tokens_per_s"], r["tokens"] / busy, "tokens/s = tokens / busy", r)
    if r["stage"] == "pretrain":
        _close(r["tt_tokens_per_param_s"], r["tokens"] / r["params_total"] / busy, "TT = tokens/params/(AL×steps)", r)
        check_energy(r, {"energy_j_per_token": r["tokens"]})
        check_mfu(r)
    else:
        _close(r["st_samples_per_param_s"], r["samples"] / r["params_total"] / busy, "ST = samples/params/busy", r)
        check_energy(r, {"energy_j_per_token": r["tokens"], "energy_j_per_sample": r["samples"]})


def check_serving(r: Mapping[str, Any]) -> None:
    n = r["output_len"]
    assert r["tokens"] == r["samples"] * n, f"{r['cell']}: {r['tokens']} tokens != {r['samples']} × {n}"
    _close(r["al_s_per_request"], r["ttft_s_mean"] + (n - 1) * r["tpot_s_mean"], "AL = TTFT + (n−1)·TPOT", r, 1e-6)
    _close(r["itl_s_mean"], r["tpot_s_mean"], "mean ITL = mean TPOT", r, 1e-6)
    low = r["tokens"] / r["seconds"]  # Σ repeat time ≤ the window
    high = r["tokens"] * r["concurrency"] / (r["samples"] * r["al_s_per_request"])  # Σ E2E ≤ concurrency × Σ time
    assert low * (1 - 1e-9) <= r["it_tokens_per_s"] <= high * (1 + 1e-9), \
        f"{r['cell']}: IT {r['it_tokens_per_s']} outside [{low}, {high}]"
    check_energy(r, {"energy_j_per_token": r["tokens"]})


# Figures that are differences and may be negative (AMU − weights − KV reserved; the decision
# tables' accuracy drop, 1 − accuracy / baseline); every other figure is a time, a size, a count,
# a rate, an energy, a power, a fraction, a ratio of non-negative quantities or a loss.
SIGNED_FIGURES = frozenset({"mem_runtime_gb", "accuracy_drop"})
INTERVAL_REL = 1e-9  # float rounding of value ± half-width


def _null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def check_intervals(r: Mapping[str, Any]) -> None:
    """Each interval contains its own value (ci_low ≤ X ≤ ci_high, to rounding) and is not below
    zero for a figure that cannot be negative. ``r``: a record row or a table row (NaN = null)."""
    name = r.get("cell", "?")
    for col in r:
        if not col.endswith("__ci_low"):
            continue
        x = col[: -len("__ci_low")]
        low, high, v = r[col], r.get(x + "__ci_high"), r.get(x)
        if _null(low) and _null(high):
            continue
        assert not _null(low) and not _null(high), f"{name}: {x}: half an interval [{low}, {high}]"
        assert not _null(v), f"{name}: {x} is null but has an interval [{low}, {high}]"
        low, high, v = float(low), float(high), float(v)
        tol = INTERVAL_REL * max(abs(low), abs(high), abs(v))
        assert low - tol <= v <= high + tol, f"{name}: {x} = {v!r} outside its interval [{low!r}, {high!r}]"
        if x not in SIGNED_FIGURES:
            assert low >= 0, f"{name}: {x} cannot be negative, its interval is [{low!r}, {high!r}]"


def check_record(r: Mapping[str, Any], samples: Path | None = None) -> None:
    """Every relation that applies to this ``ok`` record's stage."""
    assert r["status"] == "ok", f"{r['cell']}: {r['status']} {r['status_detail']}"
    check_window(r, samples)
    check_intervals(r)
    if r["stage"] in ("pretrain", "finetune"):
        check_training(r)
    elif r["stage"] == "inference":
        check_serving(r)
    else:
        check_energy(r, {})


def check_record_file(path: Path) -> dict[str, Any]:
    """Read ``path`` (and its samples beside it), check it, return the row."""
    from effbench.record import read_records  # the schema reader: types and required columns

    (r,) = read_records([path]).to_pylist()
    check_record(r, path.with_name("samples.parquet"))
    return r


# --- analytic parameter counts of a Hugging Face Llama-style config ---------------------------


def linear_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear of one decoder layer."""
    h, f = config["hidden_size"], config["intermediate_size"]
    hd = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * hd, config.get("num_key_value_heads", config["num_attention_heads"]) * hd
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}


def layer_params(config: Mapping[str, Any]) -> int:
    """One decoder layer: its linears (with the biases the config asks for) and two norms."""
    shapes = linear_shapes(config)
    n = sum(i * o for i, o in shapes.values()) + 2 * config["hidden_size"]
    if config.get("attention_bias"):
        n += sum(shapes[k][1] for k in ("q_proj", "k_proj", "v_proj", "o_proj"))
    elif config.get("model_type") == "qwen2":  # Qwen2: q, k, v biases, none on o
        n += sum(shapes[k][1] for k in ("q_proj", "k_proj", "v_proj"))
    if config.get("mlp_bias"):
        n += sum(shapes[k][1] for k in ("gate_proj", "up_proj", "down_proj"))
    return n


def model_params(config: Mapping[str, Any]) -> int:
    emb = config["vocab_size"] * config["hidden_size"]
    head = 0 if config.get("tie_word_embeddings") else emb
    return emb + head + config["num_hidden_layers"] * layer_params(config) + config["hidden_size"]


def int4_payload_bytes(config: Mapping[str, Any], group: int) -> tuple[int, int]:
    """(tensor bytes of a W4A16 checkpoint, count of its quantized linears), from the parameter
    counts: each out × in linear packs 4 bits a weight (out·in/2 bytes) and keeps one bf16 scale per
    group (out·in/group · 2 bytes); the rest (embedding, norms, an untied head) stays bf16."""
    shapes = [s for _ in range(config["num_hidden_layers"]) for s in linear_shapes(config).values()]
    linear = sum(i * o for i, o in shapes)
    return sum(i * o // 2 + i * o // group * 2 for i, o in shapes) + 2 * (model_params(config) - linear), len(shapes)


def check_int4_size(model_file: Path, config: Mapping[str, Any], group: int) -> None:
    """The checkpoint's tensor bytes against :func:`int4_payload_bytes`, allowing one 2-number
    int64 shape per linear (compressed-tensors keeps each linear's original shape)."""
    expected, linears = int4_payload_bytes(config, group)
    got = safetensors_payload_bytes(model_file)
    assert expected <= got <= expected + 16 * linears, f"{model_file}: {got} tensor bytes, analytic {expected}"


def expected_trainable(config: Mapping[str, Any], method_settings: Mapping[str, Any]) -> int:
    """Trainable parameters of a fine-tuning method on this model (lora_target: all)."""
    kind = method_settings["finetuning_type"]
    if kind == "full":
        return model_params(config)
    if kind == "freeze":
        return method_settings["freeze_trainable_layers"] * layer_params(config)
    assert method_settings["lora_target"] == "all", "the analytic count covers lora_target: all"
    r = method_settings["lora_rank"]
    shapes = linear_shapes(config).values()
    per_layer = sum(r * (i + o) for i, o in shapes)
    if method_settings.get("use_dora"):
        per_layer += sum(o for _, o in shapes)  # DoRA's magnitude vector: one per output feature
    return config["num_hidden_layers"] * per_layer


def check_trainable(r: Mapping[str, Any], model_config: Mapping[str, Any], method_settings: Mapping[str, Any]) -> None:
    """The record's trainable and total counts against the analytic ones (LoRA's total includes
    the adapter)."""
    want = expected_trainable(model_config, method_settings)
    assert r["params_trainable"] == want, f"{r['cell']}: trainable {r['params_trainable']} != analytic {want}"
    base = model_params(model_config)
    total = base if method_settings["finetuning_type"] in ("full", "freeze") else base + want
    assert r["params_total"] == total, f"{r['cell']}: total {r['params_total']} != analytic {total}"


def safetensors_payload_bytes(path: Path) -> int:
    """Bytes of a .safetensors file's tensors: the file less its 8-byte length and JSON header."""
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return path.stat().st_size - 8 - header
