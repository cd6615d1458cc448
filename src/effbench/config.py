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
# Every stage that has (or will have) its own environment; rules name theirs.
STAGES = ("driver", "pretrain", "finetune", "quantize", "inference")
ENVS_DIR = REPO_ROOT / "envs"
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
    layout = parallel_layout(config)
    if gb % (mb * layout["data_parallel"]):
        raise ConfigError(
            f"config key `pretrain.training.global_batch_size`: {gb} is not a multiple of micro_batch_size × "
            f"data-parallel size ({mb} × {layout['data_parallel']}, from pretrain.parallel)"
        )
    return {
        "size": size,
        "technique": technique,
        "model": resolve_model(config, size, technique),
        "training": training,
        "parallel": layout,
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }


PARALLEL_DEFAULTS = {"nodes": 1, "gpus_per_node": 1, "tensor_parallel": 1}


def parallel_layout(config: dict[str, Any]) -> dict[str, int]:
    """The pretraining job's parallel layout (``pretrain.parallel``), with the derived sizes.

    One process per GPU (on a CPU: per ``gpus_per_node`` CPU processes), ``nodes`` nodes.
    Data parallel only: tensor parallel > 1 is rejected (the training loop does not shard
    layers; megatron's TP needs its CUDA-only optimizer and checkpointing paths).
    """
    layout = {**PARALLEL_DEFAULTS, **config["pretrain"].get("parallel", {})}
    tp = layout["tensor_parallel"]
    if tp != 1:
        raise ConfigError(
            f"config key `pretrain.parallel.tensor_parallel`: {tp} is not supported; this pipeline trains "
            f"data parallel only (tensor_parallel: 1). Use more gpus_per_node or nodes instead."
        )
    world = layout["nodes"] * layout["gpus_per_node"]
    return {**layout, "world_size": world, "data_parallel": world // tp, "pipeline_parallel": 1}


def launch_command(python: str, layout: dict[str, int], cpus_per_node: int | None = None, gpus: bool = False) -> str:
    """How a rule starts a stage script for this layout (a shell prefix; the script follows).

    One process: the interpreter. One node, several processes: torchrun (``python -m
    torch.distributed.run``) standalone, one process per GPU of the allocation. Several nodes:
    ``srun`` starts one torchrun per node of the allocation, which rendezvous at the first node;
    its step gets ``cpus_per_node`` CPUs and (``gpus``) the node's GPUs, which a step inside a
    batch script is not given by default.
    """
    import shlex

    py = shlex.quote(python)
    nodes, per_node = layout["nodes"], layout["gpus_per_node"]
    if nodes * per_node == 1:
        return py
    if nodes == 1:
        return f"{py} -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node={per_node}"
    # Inside the Slurm allocation (the rule is submitted with nodes=N, one task per node).
    head = "$(scontrol show hostnames \"$(squeue -h -j \"$SLURM_JOB_ID\" -o %N)\" | head -n1)"
    step = (f" --cpus-per-task={cpus_per_node}" if cpus_per_node else "") + (f" --gres=gpu:{per_node}" if gpus else "")
    return (
        f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1{step} --kill-on-bad-exit=1 "
        f"{py} -m torch.distributed.run --nnodes={nodes} --nproc-per-node={per_node} "
        f"--rdzv-backend=c10d --rdzv-id=\"$SLURM_JOB_ID\" --rdzv-endpoint={head}:29500"
    )


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


# --- fine-tuning ------------------------------------------------------------------------

LORA_ONLY_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_rslora", "use_dora",
                  "loraplus_lr_ratio", "pissa_init", "pissa_iter", "pissa_convert")
FREEZE_ONLY_KEYS = ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules")
DEFAULT_TEMPLATE = "default"  # LlamaFactory's plain "Human: ... Assistant:" template (any tokenizer with an EOS)


@dataclass(frozen=True)
class FinetuneCell:
    model: str
    task: str
    method: str
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.model}/{self.task}/{self.method}"


def _check_method(where: str, m: dict[str, Any]) -> None:
    ftype = m["finetuning_type"]
    wrong = [k for k in LORA_ONLY_KEYS if ftype != "lora" and m.get(k) not in (None, False)]
    wrong += [k for k in FREEZE_ONLY_KEYS if ftype != "freeze" and m.get(k) is not None]
    if wrong:
        raise ConfigError(f"config key `{where}`: {', '.join(wrong)} do(es) not apply to finetuning_type {ftype}")
    if m.get("use_dora") and m.get("pissa_init"):
        raise ConfigError(f"config key `{where}`: use_dora and pissa_init cannot be combined")


def finetune_settings(config: dict[str, Any], model: str, method: str, task: str) -> dict[str, Any]:
    """Everything a fine-tuning cell's result depends on (goes through ``params:``).

    training: finetune.training < models.<model>.training;
    method: methods.<method> < models.<model>.overrides.<method>.
    """
    ft = config["finetune"]
    mcfg = ft["models"][model]
    training = deep_merge(ft["training"], mcfg.get("training", {}))
    if training.get("max_steps") is None and training.get("num_train_epochs") is None:
        raise ConfigError(f"finetune cell {model}/{task}/{method}: set finetune.training.num_train_epochs or max_steps")
    training.setdefault("threads", 1)
    training.setdefault("warmup_measure_steps", 0)
    if training["precision"] == "bf16" and config["device"] == "cpu":
        raise ConfigError("config key `finetune.training.precision`: bf16 needs a GPU (device is cpu)")
    method_settings = deep_merge(ft["methods"][method], mcfg.get("overrides", {}).get(method, {}))
    where = f"finetune.models.{model}.overrides.{method}" if method in mcfg.get("overrides", {}) else \
        f"finetune.methods.{method}"
    _check_method(where, method_settings)
    source = {k: mcfg[k] for k in ("pretrained", "hf_id", "path") if k in mcfg}
    return {
        "model": model,
        "method": method,
        "task": task,
        "model_source": source,
        "template": mcfg.get("template", DEFAULT_TEMPLATE),
        "trust_remote_code": mcfg.get("trust_remote_code", False),
        "method_settings": method_settings,
        "training": training,
        "task_settings": ft["tasks"][task],
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }


def finetune_cells(config: dict[str, Any], exported: list[PretrainCell]) -> list[FinetuneCell]:
    ft = config.get("finetune")
    if not ft:
        return []
    exported_names = {c.name for c in exported}
    for name, m in ft["models"].items():
        ref = m.get("pretrained")
        if ref is not None and ref not in exported_names:
            raise ConfigError(
                f"config key `finetune.models.{name}.pretrained`: {ref!r} is not a pretraining cell exported to "
                f"Hugging Face format (pretrain.grid and pretrain.export_hf); exported: {sorted(exported_names)}"
            )
        for meth in m.get("overrides", {}):
            if meth not in ft["methods"]:
                raise ConfigError(f"config key `finetune.models.{name}.overrides.{meth}`: unknown method {meth!r}")
        if "template" not in m and ref is None:
            raise ConfigError(
                f"config key `finetune.models.{name}.template`: set the LlamaFactory chat template of "
                f"{m.get('hf_id') or m.get('path')} (e.g. llama3, qwen, mistral)"
            )
    cells: dict[tuple[str, str, str], FinetuneCell] = {}
    for i, block in enumerate(ft["grid"]):
        for kind, defined in (("models", ft["models"]), ("methods", ft["methods"]), ("tasks", ft["tasks"])):
            for n in block[kind]:
                if n not in defined:
                    raise ConfigError(
                        f"config key `finetune.grid.{i}.{kind}`: unknown {kind[:-1]} {n!r}; defined {kind}: {sorted(defined)}"
                    )
        for model in block["models"]:
            for task in block["tasks"]:
                for method in block["methods"]:
                    cells[(model, task, method)] = FinetuneCell(
                        model, task, method, finetune_settings(config, model, method, task))
    return list(cells.values())


def _is_local(p: str) -> bool:
    return p.startswith((".", "/", "~")) or Path(p).exists()


# --- quantization, evaluation and inference ----------------------------------------------

# Nominal bits per weight of each precision (MCR's nominal size ratio).
WEIGHT_BITS = {"bf16": 16, "fp16": 16, "int4": 4}
# The offline multiple-choice tasks the pipeline makes (one per kind of item).
LOCAL_TASKS = {"effbench_mc_fact": "fact", "effbench_mc_context": "context", "effbench_mc_arithmetic": "arithmetic"}
INT4_DEFAULTS = {"method": "gptq", "group_size": 128, "symmetric": True, "ignore": ["lm_head"],
                 "dampening_frac": 0.01, "calibration": {"samples": 32, "seq_length": 128}}
VLLM_DEFAULTS = {"max_model_len": 512, "max_num_seqs": 256, "enforce_eager": False, "gpu_memory_utilization": 0.9, "cpu_kvcache_gb": 1,
                 "block_size": 128, "kv_cache_headroom": 1.0}


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
    ft = config.get("finetune") or {}
    for name, m in ft.get("models", {}).items():
        if "path" in m:
            out.append((f"finetune.models.{name}.path", m["path"]))
    for name, t in ft.get("tasks", {}).items():
        if t["source"] == "local":
            out.append((f"finetune.tasks.{name}.path", t["path"]))
    places = [("finetune.training", ft.get("training", {}))]
    places += [(f"finetune.methods.{n}", m) for n, m in ft.get("methods", {}).items()]
    for n, m in ft.get("models", {}).items():
        places.append((f"finetune.models.{n}.training", m.get("training", {})))
        places += [(f"finetune.models.{n}.overrides.{k}", o) for k, o in m.get("overrides", {}).items()]
    for where, t in places:
        if t.get("deepspeed"):
            out.append((f"{where}.deepspeed", t["deepspeed"]))
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
    """The interpreter of a stage's environment: ``environments.<stage>``, else the local venv."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage environment {stage!r}; stages: {', '.join(STAGES)}")
    env = config.get("environments", {}).get(stage)
    return str(Path(env).expanduser()) if env else str(REPO_ROOT / ".venvs" / stage / "bin" / "python")


def env_files(stage: str) -> list[Path]:
    """The files that define a stage's environment: the local lock and the cluster's conda file.

    Rules list them as inputs, so editing either re-runs the cells that use the stage
    (Snakemake compares checksums of small files: touching one without a change re-runs nothing).
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage environment {stage!r}; stages: {', '.join(STAGES)}")
    return [p for p in (ENVS_DIR / f"{stage}.lock.txt", ENVS_DIR / f"{stage}.yaml") if p.exists()]


def load_config(config: dict[str, Any]) -> tuple[list[PretrainCell], list[PretrainCell], list[FinetuneCell]]:
    """Validate the whole config; return the pretraining cells, the cells to export and the
    fine-tuning cells."""
    validate_schema(config)
    cells = pretrain_cells(config)
    exported = export_cells(config, cells)
    serve_cells(config)  # the quantize / eval / inference sections' own checks
    return cells, exported, finetune_cells(config, exported)
