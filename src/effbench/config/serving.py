"""The serving grid: quantize and eval cells (model × precision) and inference cells
(× load point)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..quantize.families import int4_group_problems, int4_ignore, int4_refusal  # pure: no torch
from .errors import ConfigError
from .model_ref import ModelSource, resolve_model_ref
from .pretrain import PretrainCell
from .schema import defaults_of

# Nominal bits per weight of each precision (MCR's nominal size ratio).
WEIGHT_BITS = {"bf16": 16, "fp16": 16, "int4": 4}
GROUP_SIZES = (32, 64, 128)  # quantize.int4.group_size's schema enum
CALIBRATED = ("gptq", "awq")  # int4 methods that calibrate on the pipeline's own corpus
# The offline multiple-choice tasks the pipeline makes (one per kind of item).
LOCAL_TASKS = {"effbench_mc_fact": "fact", "effbench_mc_context": "context", "effbench_mc_arithmetic": "arithmetic",
               "effbench_mc_relation": "relation"}


@dataclass(frozen=True)
class ServeCell:
    """A quantize/eval cell (model × precision) or an inference cell (× load point)."""

    model: str
    precision: str
    settings: dict[str, Any]
    load_point: str | None = None
    source: ModelSource | None = None

    @property
    def name(self) -> str:
        return "/".join(x for x in (self.model, self.precision, self.load_point) if x)


@dataclass(frozen=True)
class ServeCells:
    quantize: list[ServeCell]
    eval: list[ServeCell]
    inference: list[ServeCell]
    baseline: str = ""  # the precision MCR compares with
    table_load_point: str = ""  # the load point the paper's table reports

    def serving_job(self, model: str, precision: str) -> dict[str, dict[str, Any]]:
        """Settings of every load point of one model × precision: one engine load serves them all."""
        return {c.load_point: c.settings for c in self.inference if (c.model, c.precision) == (model, precision)}

    @property
    def served_precisions(self) -> list[str]:
        """The precisions the inference cells serve, in config order (every model serves all)."""
        return list(dict.fromkeys(c.precision for c in self.inference))

    @property
    def load_points(self) -> list[str]:
        return list(dict.fromkeys(c.load_point for c in self.inference))

    @property
    def local_eval(self) -> dict[str, Any] | None:
        """eval.local when an eval cell scores the pipeline's own offline tasks."""
        return next((c.settings["local"] for c in self.eval if c.settings["local"]), None)

    @property
    def empty(self) -> bool:
        return not self.quantize


def _within_context(key: str, length: int, model: str, source: ModelSource, what: str = "") -> None:
    """A length a later stage asks of a model, against the context the pipeline trained it for."""
    limit = source.max_positions
    if limit and length > limit:
        raise ConfigError(f"config key `{key}`: {what}{length} exceeds the {limit} positions model {model!r} was "
                          f"trained for (its seq_length, pretrain cell {source.ref})")


def _quantize_settings(config: dict[str, Any], model: str, precision: str, source: ModelSource) -> dict[str, Any]:
    q = config["quantize"]
    s: dict[str, Any] = {
        "model": model,
        "source": source.settings(),
        "precision": precision,
        "weight_bits": WEIGHT_BITS[precision],
        "threads": q["threads"],
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }
    if precision == "int4":
        int4 = copy.deepcopy(q["int4"])
        if int4["method"] in CALIBRATED:
            _within_context("quantize.int4.calibration.seq_length", int4["calibration"]["seq_length"], model, source)
        _check_groups(int4, model, source)
        s["int4"] = int4
    return s


def _check_groups(int4: dict[str, Any], model: str, source: ModelSource) -> None:
    """int4 scales weights in groups of ``group_size`` input channels: every linear layer it
    quantizes (not in ``ignore``; MoE routers stay unquantized) must have an input size that is a
    multiple of it. Checked per family (an MLA's latent, MoE experts) where the model's shape is
    known here, with the quantize stage's own rule (:func:`effbench.quantize.families.int4_refusal`)."""
    c = source.hf_config()
    if not c:
        return
    why = int4_refusal(c, int4, f"model {model!r} ({source.described})", GROUP_SIZES)
    if not why:
        return
    if source.export:  # the sizes as the pretraining settings name them too
        m = source.export.settings["model"]
        keys = {"hidden_size": "hidden_size", "kv_lora_rank": "mla.kv_lora_rank", "q_lora_rank": "mla.q_lora_rank",
                "intermediate_size": "moe.expert_ffn_hidden_size" if m.get("moe") else "ffn_hidden_size"}
        bad = int4_group_problems(c, int(int4["group_size"]), int4_ignore(c, int4.get("ignore") or ()))
        named = [f"{keys[k]} {n}" for k, n in bad.items() if k in keys]
        if named:
            why += f" (pretraining settings of {source.export.name}: {', '.join(named)})"
    raise ConfigError(f"config key `quantize.int4.group_size`: {why}")


def _serving(config: dict[str, Any]) -> dict[str, Any]:
    """The inference section, or its defaults: eval cells read its dtype and vLLM settings too."""
    return config.get("inference") or defaults_of("inference")


def _serve_dtype(config: dict[str, Any], precision: str) -> str:
    return _serving(config)["int4_dtype"] if precision == "int4" else precision


def _eval_settings(config: dict[str, Any], model: str, precision: str, source: ModelSource) -> dict[str, Any]:
    e = config["eval"]
    if e["model"] == "vllm":  # the hf backend reads the model's own context
        _within_context("eval.max_model_len", e["max_model_len"], model, source)
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
        "metrics": dict(e["metrics"]),
        "local": dict(local) if wanted_local else None,
        "num_fewshot": e["num_fewshot"],
        "batch_size": e["batch_size"],
        "limit": e["limit"],
        "max_model_len": e["max_model_len"],
        "threads": e["threads"],
        "dtype": _serve_dtype(config, precision),
        "vllm": copy.deepcopy(_serving(config)["vllm"]),
        "device": config["device"],
        "seed": config["seed"],
    }


def _inference_settings(config: dict[str, Any], model: str, precision: str, point: str,
                        source: ModelSource) -> dict[str, Any]:
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
    vllm = copy.deepcopy(inf["vllm"])
    total = lp["prompt_len"] + lp["output_len"]
    if total > vllm["max_model_len"]:
        raise ConfigError(f"config key `{key}`: prompt_len + output_len = {total} "
                          f"exceeds inference.vllm.max_model_len {vllm['max_model_len']}")
    _within_context(key, total, model, source, "prompt_len + output_len = ")
    if inf["engine"] == "vllm":  # vLLM refuses a max_model_len beyond the model's positions
        _within_context("inference.vllm.max_model_len", vllm["max_model_len"], model, source)
    return {
        "model": model,
        "precision": precision,
        "load_point": point,
        "point": lp,
        "engine": inf["engine"],
        "dtype": _serve_dtype(config, precision),
        "warmup_requests": inf["warmup_requests"],
        "repeats": inf["repeats"],
        "min_seconds": inf["min_seconds"],
        "vllm": vllm,
        "threads": inf["threads"],
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }


def serve_cells(config: dict[str, Any], exported: list[PretrainCell]) -> ServeCells:
    """The quantize, eval and inference cells (empty when the config has no quantize section)."""
    q = config.get("quantize")
    if not q:
        return ServeCells([], [], [])
    if q["baseline"] not in q["precisions"]:
        raise ConfigError(f"config key `quantize.baseline`: {q['baseline']!r} is not in quantize.precisions "
                          f"{q['precisions']} (MCR compares every precision with it)")
    sources = {m: resolve_model_ref(f"quantize.models.{m}", ref, exported) for m, ref in q["models"].items()}
    pairs = [(m, p) for m in q["models"] for p in q["precisions"]]
    quant = [ServeCell(m, p, _quantize_settings(config, m, p, sources[m]), source=sources[m]) for m, p in pairs]
    ev = [ServeCell(m, p, _eval_settings(config, m, p, sources[m]), source=sources[m]) for m, p in pairs] \
        if config.get("eval") else []
    inf, table_point = [], ""
    if config.get("inference"):
        points = config["inference"]["load_points"]
        table_point = config["inference"]["table_load_point"]
        if table_point not in points:
            raise ConfigError(f"config key `inference.table_load_point`: {table_point!r} is not one of "
                              f"inference.load_points {sorted(points)}")
        inf = [ServeCell(m, p, _inference_settings(config, m, p, lp, sources[m]), lp, sources[m])
               for m, p in pairs for lp in points]
    return ServeCells(quant, ev, inf, q["baseline"], table_point)


def needs_calibration(settings: dict[str, Any]) -> bool:
    """Whether a quantize cell calibrates on the pipeline's own corpus (GPTQ and AWQ int4)."""
    return settings["precision"] == "int4" and settings["int4"]["method"] in CALIBRATED
