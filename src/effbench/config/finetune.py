"""The fine-tuning grid: model × task × method cells (the union of the grid's blocks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .merge import deep_merge
from .model_ref import ModelSource, model_reference, resolve_model_ref
from .pretrain import PretrainCell

LORA_ONLY_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_rslora", "use_dora",
                  "loraplus_lr_ratio", "pissa_init", "pissa_iter", "pissa_convert")
FREEZE_ONLY_KEYS = ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules")


@dataclass(frozen=True)
class FinetuneCell:
    model: str
    task: str
    method: str
    settings: dict[str, Any]
    source: ModelSource

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


def finetune_gpus(config: dict[str, Any], model: str) -> int:
    """GPUs (processes, on a CPU) of a model's fine-tuning cells: ``finetune.models.<model>.gpus``,
    else ``finetune.parallel.gpus``. Part of the experiment: it multiplies the global batch."""
    ft = config["finetune"]
    return int(ft["models"][model].get("gpus") or ft["parallel"]["gpus"])


def finetune_layout(settings: dict[str, Any]) -> dict[str, int]:
    """A fine-tuning cell's launch layout (one node), in the shape ``launch_command`` and
    ``gpu_resources`` take: the same launcher and scheduler request as pretraining."""
    return {"nodes": 1, "gpus_per_node": int((settings.get("parallel") or {}).get("gpus", 1))}


def deepspeed_config(settings: dict[str, Any]) -> str | None:
    """The DeepSpeed JSON a cell names (the method's beats the shared training key, as in
    ``finetune.args``), or None."""
    return settings["method_settings"].get("deepspeed") or settings["training"].get("deepspeed")


def finetune_settings(config: dict[str, Any], model: str, method: str, task: str,
                      source: ModelSource) -> dict[str, Any]:
    """Everything a fine-tuning cell's result depends on (goes through ``params:``).

    training: finetune.training < models.<model>.training;
    method: methods.<method> < models.<model>.overrides.<method>.
    """
    ft = config["finetune"]
    mcfg = ft["models"][model]
    training = deep_merge(ft["training"], mcfg["training"])
    if training.get("max_steps") is None and training.get("num_train_epochs") is None:
        raise ConfigError(f"finetune cell {model}/{task}/{method}: set config key `finetune.training.num_train_epochs` "
                          f"or max_steps (there or in finetune.models.{model}.training)")
    if training["precision"] == "bf16" and config["device"] == "cpu":
        raise ConfigError("config key `finetune.training.precision`: bf16 needs a GPU (device is cpu)")
    method_settings = deep_merge(ft["methods"][method], mcfg["overrides"].get(method, {}))
    where = f"finetune.models.{model}.overrides.{method}" if method in mcfg["overrides"] else \
        f"finetune.methods.{method}"
    _check_method(where, method_settings)
    return {
        "model": model,
        "method": method,
        "task": task,
        "model_source": source.reference,
        "template": mcfg["template"],
        "trust_remote_code": mcfg["trust_remote_code"],
        "method_settings": method_settings,
        "training": training,
        "task_settings": ft["tasks"][task],
        "parallel": {"gpus": finetune_gpus(config, model)},
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }


def finetune_cells(config: dict[str, Any], exported: list[PretrainCell]) -> list[FinetuneCell]:
    ft = config.get("finetune")
    if not ft:
        return []
    sources = {}
    for name, m in ft["models"].items():
        sources[name] = resolve_model_ref(f"finetune.models.{name}", model_reference(m), exported)
        for meth in m["overrides"]:
            if meth not in ft["methods"]:
                raise ConfigError(f"config key `finetune.models.{name}.overrides.{meth}`: unknown method {meth!r}")
        if "template" not in m:  # the schema defaults it for the pipeline's own exports only
            raise ConfigError(
                f"config key `finetune.models.{name}.template`: set the LlamaFactory chat template of "
                f"{sources[name].ref} (e.g. llama3, qwen, mistral)"
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
                        model, task, method, finetune_settings(config, model, method, task, sources[model]),
                        sources[model])
    return list(cells.values())
