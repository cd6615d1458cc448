"""Load, validate and expand the pipeline config into cells.

The Snakefile calls ``load_config`` once when the DAG is built, so a bad value stops
the run before any job starts, with a message that names the key. Each cell's resolved
settings are what the rules pass through ``params:``: a changed value reruns exactly the
cells whose resolved settings it changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .provenance import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
STAGES_WITH_ENV = ("pretrain", "quantize", "inference")
# Techniques that map onto a Llama/Qwen2-style Hugging Face checkpoint.
EXPORTABLE_ATTENTION = ("mha", "mqa", "gqa")
REQUIRED_MODEL_KEYS = (
    "num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "seq_length", "attention",
    "rotary_base", "normalization", "norm_epsilon", "tie_embeddings", "init_method_std",
)


class ConfigError(ValueError):
    """A config problem; the message names the offending key."""


@dataclass(frozen=True)
class PretrainCell:
    size: str
    technique: str
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.size}/{self.technique}"


def _schema() -> dict[str, Any]:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_schema(config: dict[str, Any]) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:20]:
            # Report the innermost cause of a oneOf/anyOf so the message is specific.
            best = jsonschema.exceptions.best_match([e])
            lines.append(f"config key `{_key(best.absolute_path)}`: {best.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_model(config: dict[str, Any], size: str, technique: str) -> dict[str, Any]:
    """defaults < size < technique < size.overrides.<technique>, then attention rules."""
    pt = config["pretrain"]
    size_cfg = {k: v for k, v in pt["sizes"][size].items() if k != "overrides"}
    overrides = pt["sizes"][size].get("overrides", {}).get(technique, {})
    m = deep_merge(deep_merge(deep_merge(pt["model_defaults"], size_cfg), pt["techniques"][technique]), overrides)
    where = f"pretrain cell {size}/{technique}"
    for key in REQUIRED_MODEL_KEYS:
        if key not in m:
            raise ConfigError(
                f"{where}: `{key}` is set nowhere (pretrain.model_defaults, pretrain.sizes.{size} "
                f"or pretrain.techniques.{technique})"
            )
    heads = m["num_attention_heads"]
    if m["hidden_size"] % heads:
        raise ConfigError(f"{where}: hidden_size {m['hidden_size']} is not divisible by num_attention_heads {heads}")
    attention = m["attention"]
    if attention == "mha":
        m["num_query_groups"] = None
    elif attention == "mqa":
        m["num_query_groups"] = 1
    elif attention == "gqa":
        g = m.get("num_query_groups")
        if not g or heads % g or g in (1, heads):
            raise ConfigError(
                f"{where}: gqa needs num_query_groups strictly between 1 and num_attention_heads ({heads}) "
                f"that divides it, got {g!r} (key pretrain.sizes.{size}.num_query_groups or "
                f"pretrain.techniques.{technique}.num_query_groups)"
            )
    elif attention == "mla":
        m["num_query_groups"] = None
        if not m.get("mla"):
            raise ConfigError(f"{where}: attention mla needs pretrain.techniques.{technique}.mla settings")
    if attention != "mla":
        m["mla"] = None
    moe = m.get("moe")
    if moe:
        if moe["router_topk"] > moe["num_experts"]:
            raise ConfigError(f"{where}: moe.router_topk {moe['router_topk']} > moe.num_experts {moe['num_experts']}")
        moe = dict(moe)
        moe.setdefault("expert_ffn_hidden_size", None)
        if moe["expert_ffn_hidden_size"] is None:  # "0.5B×8": each expert is the size's dense FFN
            moe["expert_ffn_hidden_size"] = m["ffn_hidden_size"]
        m["moe"] = moe
    else:
        m["moe"] = None
    m.setdefault("add_qkv_bias", False)
    return m


def pretrain_settings(config: dict[str, Any], size: str, technique: str) -> dict[str, Any]:
    """Everything a pretraining cell's result depends on (goes through ``params:``)."""
    training = dict(config["pretrain"]["training"])
    mb, gb = training["micro_batch_size"], training["global_batch_size"]
    if gb % mb:
        raise ConfigError(
            f"pretrain.training.global_batch_size {gb} is not a multiple of micro_batch_size {mb}"
        )
    if training["min_lr"] > training["lr"]:
        raise ConfigError("pretrain.training.min_lr is larger than pretrain.training.lr")
    if training["warmup_steps"] >= training["train_steps"]:
        raise ConfigError("pretrain.training.warmup_steps must be smaller than pretrain.training.train_steps")
    training.setdefault("warmup_measure_steps", 0)
    training.setdefault("threads", 1)
    return {
        "size": size,
        "technique": technique,
        "model": resolve_model(config, size, technique),
        "training": training,
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }


def pretrain_cells(config: dict[str, Any]) -> list[PretrainCell]:
    pt = config["pretrain"]
    cells = []
    for size, techniques in pt["grid"].items():
        if size not in pt["sizes"]:
            raise ConfigError(
                f"config key `pretrain.grid.{size}`: unknown size {size!r}; defined sizes: {sorted(pt['sizes'])}"
            )
        for t in techniques:
            if t not in pt["techniques"]:
                raise ConfigError(
                    f"config key `pretrain.grid.{size}`: unknown technique {t!r}; "
                    f"defined techniques: {sorted(pt['techniques'])}"
                )
            cells.append(PretrainCell(size, t, pretrain_settings(config, size, t)))
    for t in pt.get("export_hf", []):
        if t not in pt["techniques"]:
            raise ConfigError(f"config key `pretrain.export_hf`: unknown technique {t!r}")
    return cells


def export_cells(config: dict[str, Any], cells: list[PretrainCell]) -> list[PretrainCell]:
    wanted = set(config["pretrain"].get("export_hf", []))
    out = []
    for c in cells:
        if c.technique not in wanted:
            continue
        m = c.settings["model"]
        if m["attention"] not in EXPORTABLE_ATTENTION or m["moe"]:
            raise ConfigError(
                f"config key `pretrain.export_hf`: technique {c.technique!r} ({m['attention']}"
                f"{', moe' if m['moe'] else ''}) has no Llama/Qwen2-style Hugging Face layout; "
                f"exportable: dense {', '.join(EXPORTABLE_ATTENTION)}"
            )
        out.append(c)
    return out


# --- quantization, evaluation and inference ----------------------------------------------

# Nominal bits per weight of each precision (MCR's nominal size ratio).
WEIGHT_BITS = {"bf16": 16, "fp16": 16, "int4": 4}
# The offline multiple-choice tasks the pipeline makes (one per kind of item).
LOCAL_TASKS = {"effbench_mc_fact": "fact", "effbench_mc_context": "context", "effbench_mc_arithmetic": "arithmetic"}
INT4_DEFAULTS = {"method": "gptq", "group_size": 128, "symmetric": True, "ignore": ["lm_head"],
                 "dampening_frac": 0.01, "calibration": {"samples": 32, "seq_length": 128}}
VLLM_DEFAULTS = {"max_model_len": 512, "max_num_seqs": 256, "enforce_eager": False, "gpu_memory_utilization": 0.9, "cpu_kvcache_gb": 1}


@dataclass(frozen=True)
class ServeCell:
    """A quantize/eval cell (model × precision) or an inference cell (× load point)."""

    model: str
    precision: str
    settings: dict[str, Any]
    load_point: str | None = None

    @property
    def name(self) -> str:
        return "/".join(x for x in (self.model, self.precision, self.load_point) if x)


@dataclass(frozen=True)
class ServeCells:
    quantize: list[ServeCell]
    eval: list[ServeCell]
    inference: list[ServeCell]

    def serving_job(self, model: str, precision: str) -> dict[str, dict[str, Any]]:
        """Settings of every load point of one model × precision: one engine load serves them all."""
        return {c.load_point: c.settings for c in self.inference if (c.model, c.precision) == (model, precision)}

    @property
    def empty(self) -> bool:
        return not self.quantize


def model_source(config: dict[str, Any], name: str) -> dict[str, Any]:
    """How to find model ``name``: {"kind": "pretrained"|"hf"|"path", "ref": ..., plus shape if known}.

    The one place a model reference is resolved. A ``pretrained`` model is a pipeline export
    (rule export_hf); a fine-tuned one (``finetuned``) will be resolved here too.
    """
    ref = config["quantize"]["models"][name]
    (kind, value), = ref.items()
    out: dict[str, Any] = {"kind": kind, "ref": value}
    if kind == "pretrained":
        size, technique = value.split("/")
        key = f"quantize.models.{name}.pretrained"
        cells = {(c.size, c.technique): c for c in pretrain_cells(config)}
        if (size, technique) not in cells:
            raise ConfigError(f"config key `{key}`: {value!r} is not a pretraining cell (pretrain.grid)")
        if technique not in config["pretrain"].get("export_hf", []):
            raise ConfigError(f"config key `{key}`: technique {technique!r} is not in pretrain.export_hf, "
                              "so the pipeline makes no Hugging Face export of it")
        m = cells[(size, technique)].settings["model"]
        out["linear_in_features"] = sorted({m["hidden_size"], m["ffn_hidden_size"]})
        out["max_positions"] = m["seq_length"]
    return out


def _quantize_settings(config: dict[str, Any], model: str, precision: str) -> dict[str, Any]:
    q = config["quantize"]
    s: dict[str, Any] = {
        "model": model,
        "source": model_source(config, model),
        "precision": precision,
        "weight_bits": WEIGHT_BITS[precision],
        "threads": q.get("threads", 1),
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }
    if precision == "int4":
        int4 = deep_merge(INT4_DEFAULTS, q.get("int4", {}))
        g = int4["group_size"]
        bad = [n for n in s["source"].get("linear_in_features", []) if n % g]
        if bad:
            raise ConfigError(
                f"config key `quantize.int4.group_size`: {g} does not divide the input size(s) {bad} of model "
                f"{model!r}'s linear layers; pick a group size that divides them (32, 64 or 128)"
            )
        s["int4"] = int4
    return s


def _eval_settings(config: dict[str, Any], model: str, precision: str) -> dict[str, Any]:
    e = config["eval"]
    local = e.get("local")
    wanted_local = [t for t in e["tasks"] if t in LOCAL_TASKS]
    if wanted_local and not local:
        raise ConfigError(f"config key `eval.local`: tasks {wanted_local} are made by the pipeline; "
                          "set eval.local.items_per_task")
    return {
        "model": model,
        "precision": precision,
        "backend": e["model"],
        "tasks": list(e["tasks"]),
        "metrics": dict(e.get("metrics", {})),
        "local": dict(local) if wanted_local else None,
        "num_fewshot": e.get("num_fewshot"),
        "batch_size": e.get("batch_size", 16),
        "limit": e.get("limit"),
        "max_model_len": e.get("max_model_len", 2048),
        "threads": e.get("threads", 1),
        "dtype": _serve_dtype(config, precision),
        "vllm": _vllm_settings(config),
        "device": config["device"],
        "seed": config["seed"],
    }


def _serve_dtype(config: dict[str, Any], precision: str) -> str:
    if precision == "int4":
        return config.get("inference", {}).get("int4_dtype", "bf16")
    return precision


def _vllm_settings(config: dict[str, Any]) -> dict[str, Any]:
    return deep_merge(VLLM_DEFAULTS, config.get("inference", {}).get("vllm", {}))


def _inference_settings(config: dict[str, Any], model: str, precision: str, point: str) -> dict[str, Any]:
    inf = config["inference"]
    lp = dict(inf["load_points"][point])
    key = f"inference.load_points.{point}"
    if lp["mode"] == "offline":
        if "concurrency" in lp:
            raise ConfigError(f"config key `{key}.concurrency`: an offline load point submits every request at "
                              "once (the engine batches up to inference.vllm.max_num_seqs); use mode: concurrency")
        lp["concurrency"] = lp["requests"]
    elif lp["concurrency"] > lp["requests"]:
        raise ConfigError(f"config key `{key}.concurrency`: {lp['concurrency']} is more than requests "
                          f"({lp['requests']})")
    vllm = _vllm_settings(config)
    total = lp["prompt_len"] + lp["output_len"]
    if total > vllm["max_model_len"]:
        raise ConfigError(f"config key `{key}`: prompt_len + output_len = {total} "
                          f"exceeds inference.vllm.max_model_len {vllm['max_model_len']}")
    limit = model_source(config, model).get("max_positions")
    if limit and total > limit:
        raise ConfigError(f"config key `{key}`: prompt_len + output_len = {total} exceeds the {limit} positions "
                          f"model {model!r} was trained for (its seq_length)")
    return {
        "model": model,
        "precision": precision,
        "load_point": point,
        "point": lp,
        "engine": inf["engine"],
        "dtype": _serve_dtype(config, precision),
        "warmup_requests": inf["warmup_requests"],
        "repeats": inf["repeats"],
        "min_seconds": inf.get("min_seconds", 0.0),
        "vllm": vllm,
        "threads": inf.get("threads", 1),
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }


def serve_cells(config: dict[str, Any]) -> ServeCells:
    """The quantize, eval and inference cells (empty when the config has no quantize section)."""
    q = config.get("quantize")
    if not q:
        return ServeCells([], [], [])
    if q["baseline"] not in q["precisions"]:
        raise ConfigError(f"config key `quantize.baseline`: {q['baseline']!r} is not in quantize.precisions "
                          f"{q['precisions']} (MCR compares every precision with it)")
    quant = [ServeCell(m, p, _quantize_settings(config, m, p)) for m in q["models"] for p in q["precisions"]]
    ev = [ServeCell(m, p, _eval_settings(config, m, p)) for m in q["models"] for p in q["precisions"]] \
        if config.get("eval") else []
    inf = []
    if config.get("inference"):
        points = config["inference"]["load_points"]
        if config["inference"]["table_load_point"] not in points:
            raise ConfigError(f"config key `inference.table_load_point`: "
                              f"{config['inference']['table_load_point']!r} is not one of inference.load_points "
                              f"{sorted(points)}")
        inf = [ServeCell(m, p, _inference_settings(config, m, p, lp), lp)
               for m in q["models"] for p in q["precisions"] for lp in points]
    return ServeCells(quant, ev, inf)


def data_paths(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(config key, path) of every input the config reads from outside the pipeline."""
    d = config["data"]["pretrain"]
    out = []
    if d["source"] == "shards":
        out.append(("data.pretrain.shards.path", d["shards"]["path"]))
        tok = d["shards"]["tokenizer"]
        if tok.startswith((".", "/", "~")) or Path(tok).exists():
            out.append(("data.pretrain.shards.tokenizer", tok))
    for name, ref in (config.get("quantize") or {}).get("models", {}).items():
        if "path" in ref:
            out.append((f"quantize.models.{name}.path", ref["path"]))
    return out


def missing_paths(config: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, p) for k, p in data_paths(config) if not Path(p).expanduser().exists()]


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def stage_python(config: dict[str, Any], stage: str) -> str:
    env = config.get("environments", {}).get(stage)
    return env or str(REPO_ROOT / ".venvs" / stage / "bin" / "python")


def load_config(config: dict[str, Any]) -> tuple[list[PretrainCell], list[PretrainCell]]:
    """Validate the whole config; return the pretraining cells and the cells to export."""
    validate_schema(config)
    cells = pretrain_cells(config)
    exports = export_cells(config, cells)
    serve_cells(config)  # the quantize / eval / inference sections' own checks
    return cells, exports
