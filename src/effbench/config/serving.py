"""The serving grid: quantize and eval cells (model × precision) and inference cells
(× load point)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..quantize.families import int4_group_problems, int4_ignore, int4_refusal  # pure: no torch
from .errors import ConfigError
from .load_points import expand_load_points, is_open_loop
from .model_ref import ModelSource, resolve_model_ref
from .pretrain import PretrainCell
from .schema import defaults_of

# Nominal bits per weight of each precision (MCR's nominal size ratio).
WEIGHT_BITS = {"bf16": 16, "fp16": 16, "int4": 4, "fp8": 8, "int8": 8}
QUANTIZED = ("int4", "fp8", "int8")  # served with inference.int4_dtype activations outside the quantized layers
GROUP_SIZES = (32, 64, 128)  # quantize.int4.group_size's schema enum
CALIBRATED = ("gptq", "awq", "smoothquant_gptq", "smoothquant_rtn")  # methods that calibrate on the pipeline's corpus
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

    beyond_paper: tuple[str, ...] = ()  # quantize.beyond_paper.precisions: served beside the paper's

    def precisions_of(self, model: str) -> list[str]:
        """The precisions one model is quantized and served at (the paper's, and beyond_paper's where
        it is one of quantize.beyond_paper.models), in config order."""
        return [c.precision for c in self.quantize if c.model == model]

    def models_with(self, precisions: list[str]) -> list[str]:
        """The models served at exactly these precisions (a wildcard constraint per precision set)."""
        return sorted({c.model for c in self.quantize if self.precisions_of(c.model) == precisions})

    @property
    def precision_sets(self) -> list[list[str]]:
        """The distinct per-model precision lists (one for the paper's models, one with beyond_paper's)."""
        out: list[list[str]] = []
        for m in dict.fromkeys(c.model for c in self.quantize):
            if self.precisions_of(m) not in out:
                out.append(self.precisions_of(m))
        return out

    def serving_job(self, model: str, precision: str, open_loop: bool = False) -> dict[str, dict[str, Any]]:
        """Settings of the closed-loop (or, ``open_loop``, the open-loop) load points of one model ×
        precision: one engine load serves them all."""
        return {c.load_point: c.settings for c in self.inference
                if (c.model, c.precision) == (model, precision) and is_open_loop(c.settings["point"]) == open_loop}

    def points(self, open_loop: bool) -> list[str]:
        """The closed-loop or the open-loop load points (a sweep's points included), in config order."""
        return [p for p in self.load_points
                if is_open_loop(next(c for c in self.inference if c.load_point == p).settings["point"]) == open_loop]

    def open_loop_names(self, kind: str) -> list[str]:
        """The models (``kind`` "model") or precisions ("precision") that serve the open-loop points."""
        return sorted({getattr(c, kind) for c in self.inference if is_open_loop(c.settings["point"])})

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
        **_beyond_paper(config, precision),
    }
    if precision in ("fp8", "int8"):
        s[precision] = _w8a8_settings(q, model, precision, source)
    if precision == "int4":
        int4 = copy.deepcopy(q["int4"])
        if int4["method"] in CALIBRATED:
            _within_context("quantize.int4.calibration.seq_length", int4["calibration"]["seq_length"], model, source)
        _check_groups(int4, model, source)
        s["int4"] = int4
    return s


def _beyond_paper(config: dict[str, Any], precision: str) -> dict[str, str]:
    """``precision_set: beyond_paper`` for a precision of quantize.beyond_paper; nothing for the paper's
    own (their settings, hence their cells, stay as they were before the key existed)."""
    beyond = (config["quantize"].get("beyond_paper") or {}).get("precisions", ())
    return {"precision_set": "beyond_paper"} if precision in beyond else {}


def _w8a8_settings(q: dict[str, Any], model: str, precision: str, source: ModelSource) -> dict[str, Any]:
    """quantize.fp8 / quantize.int8, checked against the model's shape where it is known here
    (:func:`effbench.quantize.families.w8a8_refusal`: the scheme's kernels tile every quantized layer)."""
    block = copy.deepcopy(q[precision])
    if block.get("method") in CALIBRATED:
        _within_context(f"quantize.{precision}.calibration.seq_length", block["calibration"]["seq_length"], model,
                        source)
    c = source.hf_config()
    if c:
        from ..quantize.families import w8a8_refusal  # pure: no torch

        why = w8a8_refusal(c, precision, block, f"model {model!r} ({source.described})")
        if why:
            raise ConfigError(f"config key `quantize.beyond_paper.precisions`: {why}")
    return block


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
    return _serving(config)["int4_dtype"] if precision in QUANTIZED else precision


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


def _inference_settings(config: dict[str, Any], model: str, precision: str, point: str, lp: dict[str, Any],
                        source: ModelSource) -> dict[str, Any]:
    """One inference cell's settings; ``lp``: the load point resolved by :func:`.load_points.expand_load_points`."""
    inf = config["inference"]
    key = f"inference.load_points.{lp.get('sweep_of', point)}"
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
        **_beyond_paper(config, precision),
        "engine": inf["engine"],
        "dtype": _serve_dtype(config, precision),
        "warmup_requests": inf["warmup_requests"],
        "repeats": lp.pop("repeats"),
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
    bp = q.get("beyond_paper") or {}
    beyond = list(bp.get("precisions", ()))
    unknown = [m for m in bp.get("models", ()) if m not in q["models"]]
    if unknown:
        raise ConfigError(f"config key `quantize.beyond_paper.models`: {unknown} are not in quantize.models "
                          f"{sorted(q['models'])}")
    beyond_models = set(bp.get("models", q["models"]))
    pairs = [(m, p) for m in q["models"] for p in (*q["precisions"], *(beyond if m in beyond_models else ()))]
    quant = [ServeCell(m, p, _quantize_settings(config, m, p, sources[m]), source=sources[m]) for m, p in pairs]
    ev = [ServeCell(m, p, _eval_settings(config, m, p, sources[m]), source=sources[m]) for m, p in pairs] \
        if config.get("eval") else []
    inf, table_point = [], ""
    if config.get("inference"):
        points = expand_load_points(config["inference"]["load_points"], config["inference"]["repeats"])
        table_point = config["inference"]["table_load_point"]
        if table_point not in points:
            raise ConfigError(f"config key `inference.table_load_point`: {table_point!r} is not one of "
                              f"inference.load_points {sorted(points)}")
        serves = _open_loop_pairs(config["inference"].get("open_loop") or {}, pairs)
        inf = [ServeCell(m, p, _inference_settings(config, m, p, name, copy.deepcopy(lp), sources[m]), name, sources[m])
               for m, p in pairs for name, lp in points.items() if not is_open_loop(lp) or (m, p) in serves]
    return ServeCells(quant, ev, inf, q["baseline"], table_point, tuple(beyond))


def _open_loop_pairs(open_loop: dict[str, Any], pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The model × precision pairs that serve the open-loop points (inference.open_loop; default all)."""
    models = {m for m, _ in pairs}
    precisions = {p for _, p in pairs}
    for kind, known in (("models", models), ("precisions", precisions)):
        unknown = [x for x in open_loop.get(kind, ()) if x not in known]
        if unknown:
            raise ConfigError(f"config key `inference.open_loop.{kind}`: {unknown} are not served "
                              f"(quantize.{'models' if kind == 'models' else 'precisions / beyond_paper'}: "
                              f"{sorted(known)})")
    want_m, want_p = set(open_loop.get("models", models)), set(open_loop.get("precisions", precisions))
    return {(m, p) for m, p in pairs if m in want_m and p in want_p}


def needs_calibration(settings: dict[str, Any]) -> bool:
    """Whether a quantize cell calibrates on the pipeline's own corpus (GPTQ and AWQ int4; int8 with
    SmoothQuant or GPTQ)."""
    block = settings.get(settings["precision"])
    return isinstance(block, dict) and block.get("method") in CALIBRATED
