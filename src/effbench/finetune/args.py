"""A fine-tuning cell's resolved settings → the argument dict LlamaFactory's ``run_exp`` takes.

Pure and light (no torch, no LlamaFactory), so the driver's unit tests check it. The
LlamaFactory keys a method may set are listed in ``METHOD_KEYS``; the schema allows exactly
those (plus ``extra_args``, passed through unchecked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .resume import checkpoint_args

METHOD_KEYS = (
    "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_rslora", "use_dora",
    "loraplus_lr_ratio", "pissa_init", "pissa_iter", "pissa_convert", "freeze_trainable_layers",
    "freeze_trainable_modules", "freeze_extra_modules", "deepspeed",
)
# Shared training keys that are LlamaFactory / Hugging Face TrainingArguments names verbatim.
TRAINING_KEYS = (
    "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_ratio", "weight_decay", "max_grad_norm",
    "cutoff_len", "max_samples", "deepspeed", "gradient_checkpointing",
)
# Keys of a cell's training settings that are ours, not LlamaFactory's.
OWN_TRAINING_KEYS = ("precision", "threads", "warmup_measure_steps", "host_memory_limit_gb", "exact_match_samples",
                     "max_new_tokens", "checkpoint_interval", "extra_args")


def llamafactory_args(
    settings: dict[str, Any], *, model_path: str, dataset_dir: Path, datasets: dict[str, str], output_dir: Path,
    device: str,
) -> dict[str, Any]:
    """The dict for ``llamafactory.train.tuner.run_exp``.

    ``datasets``: {"train": name, "eval": name or absent} as listed in ``dataset_dir``'s
    dataset_info.json; with no eval dataset, ``val_size`` of the task holds out a fraction.
    """
    t = settings["training"]
    m = settings["method_settings"]
    task = settings["task_settings"]
    args: dict[str, Any] = {
        "stage": "sft",
        "do_train": True,
        "model_name_or_path": model_path,
        "template": settings["template"],
        "dataset_dir": str(dataset_dir),
        "dataset": datasets["train"],
        "output_dir": str(output_dir),
        # True stops LlamaFactory resuming any checkpoint it finds (train.py picks one, guarded
        # by the settings); it removes only LlamaFactory's trainer log, never checkpoints.
        "overwrite_output_dir": True,
        "overwrite_cache": True,
        **checkpoint_args(t.get("checkpoint_interval")),  # the final adapter/model is saved by run_sft
        "logging_steps": 1,  # every optimizer step reaches the callback's on_log
        "report_to": "none",
        "disable_tqdm": True,
        "plot_loss": False,
        "include_num_input_tokens_seen": True,
        "dataloader_num_workers": 0,
        "seed": settings["seed"],
        "data_seed": settings["seed"],
        "bf16": t["precision"] == "bf16",
        "fp16": False,
        "trust_remote_code": settings.get("trust_remote_code", False),
    }
    if device == "cpu":
        args["use_cpu"] = True
    for k in TRAINING_KEYS:
        if t.get(k) is not None:
            args[k] = t[k]
    if args.get("max_steps") is None:
        args["max_steps"] = -1  # epochs decide
    eval_name = datasets.get("eval")
    if eval_name:
        args.update(do_eval=True, eval_dataset=eval_name, eval_strategy="no")
    elif task.get("val_size"):
        args.update(do_eval=True, val_size=task["val_size"], eval_strategy="no")
    for k in METHOD_KEYS:
        if m.get(k) is not None:
            args[k] = m[k]
    if m.get("learning_rate") is not None:  # a method's own learning rate beats the shared one
        args["learning_rate"] = m["learning_rate"]
    args.update(t.get("extra_args") or {})
    args.update(m.get("extra_args") or {})
    return args
