"""Fine-tune one cell (model × method × task) with LlamaFactory, measured by the shared core.

LlamaFactory does the work (``run_exp`` with the cell's argument dict); our
:class:`~effbench.finetune.callback.MeasureCallback` rides in its trainer loop and marks the
measured window. Afterwards the figures are computed with the shared formulas.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # LlamaFactory: our lock pins are checked by pip, not at run time
if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # what LlamaFactory's launcher sets for its torchrun workers
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    os.environ.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")

import torch  # noqa: E402

from ..measure.figure import Figure  # noqa: E402
from ..measure.monitor import Monitor  # noqa: E402
from ..measure.training import ENERGY_FLAGS, training_figures  # noqa: E402
from ..plan.finetune import Zero  # noqa: E402
from ..record import WINDOW_FIGURES, settings_json  # noqa: E402
from ..runner import launch_ranks  # noqa: E402
from ..torch_device import apply_host_memory_cap, pick_device  # noqa: E402
from .args import llamafactory_args  # noqa: E402
from .callback import MeasureCallback  # noqa: E402
from .heldout import held_out_loss  # noqa: E402
from .resume import find_resumable, mark_checkpoints_callback, remove_checkpoints  # noqa: E402
from .tasks import TASK_META  # noqa: E402

log = logging.getLogger("effbench.finetune")
ADAPTER_FILES = ("*.safetensors", "*.bin")
NOT_WEIGHTS = {"training_args.bin"}  # the Trainer's pickled arguments, saved beside the weights


def _normalise(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return re.sub(r"[\s.]+$", "", first).strip().lower()


@torch.no_grad()
def exact_match(model: Any, tokenizer: Any, template_name: str, items: list[dict[str, str]],
                max_new_tokens: int) -> float:
    """Share of items whose greedy answer, up to its first line, equals the reference.

    Prompts are encoded with the same LlamaFactory template the model was trained with.
    """
    from llamafactory.data.template import TEMPLATES

    template = TEMPLATES[template_name]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos = [i for i in {tokenizer.eos_token_id, tokenizer.pad_token_id} if i is not None]
    correct = shown = 0
    for it in items:
        content = "\n".join(x for x in (it.get("instruction", ""), it.get("input", "")) if x)
        prompt_ids, _ = template.encode_oneturn(
            tokenizer, [{"role": "user", "content": content}, {"role": "assistant", "content": ""}])
        ids = torch.tensor([prompt_ids], device=device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos, pad_token_id=eos[0] if eos else None)
        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        hit = _normalise(answer) == _normalise(it["output"])
        correct += hit
        if shown < 5:  # a few examples in the log, to see what the model says
            log.info("exact match example: %r -> %r (reference %r, %s)", content[-60:], answer, it["output"],
                     "hit" if hit else "miss")
            shown += 1
    if was_training:
        model.train()
    return correct / len(items)


def count_parameters(model: Any) -> tuple[int, int]:
    """(total, trainable); a ZeRO-3 partitioned parameter is empty on each rank, its size is ds_numel."""
    def n(p: Any) -> int:
        return int(getattr(p, "ds_numel", p.numel()))

    total = sum(n(p) for p in model.parameters())
    trainable = sum(n(p) for p in model.parameters() if p.requires_grad)
    return total, trainable


def check_world(settings: dict[str, Any], world: int) -> None:
    """The processes launched must be the cell's finetune.parallel GPUs (the global batch depends on it)."""
    want = int((settings.get("parallel") or {}).get("gpus", 1))
    if world != want:
        raise RuntimeError(f"{world} processes were launched but finetune.parallel.gpus (or finetune.models."
                           f"{settings['model']}.gpus) asks for {want}: launch with torchrun --nproc-per-node={want}")


def saved_bytes(output_dir: Path) -> int:
    """Bytes of the weights LlamaFactory saved: the adapter (LoRA family) or the model (freeze, full)."""
    return sum(p.stat().st_size for pat in ADAPTER_FILES for p in output_dir.glob(pat) if p.name not in NOT_WEIGHTS)


def finetune_cell(settings: dict[str, Any], *, model_path: str, data_dir: Path, output_dir: Path,
                  mon: Monitor) -> dict[str, Any]:
    """Fine-tune, evaluate and save one cell; return its figures and counts for the record."""
    from llamafactory.train.tuner import run_exp

    t = settings["training"]
    task = settings["task_settings"]
    device = pick_device(settings["device"])
    if t["precision"] == "bf16" and device != "cuda":
        raise RuntimeError("finetune.training.precision bf16 needs a GPU; use fp32 on a CPU")
    if device == "cpu":
        torch.set_num_threads(t.get("threads", 1))
    meta = json.loads((data_dir / TASK_META).read_text())
    n_em = int(task.get("exact_match_samples") or 0)
    em_items: list[dict[str, str]] = []
    em_missing = "exact-match accuracy is off for this task (tasks.<name>.exact_match_samples)"
    if n_em and meta.get("exact_match_file"):
        em_items = json.loads((data_dir / meta["exact_match_file"]).read_text())[:n_em]
    elif n_em:
        em_missing = "the task has no held-out file with short reference answers for exact match"

    rank, world, _, _ = launch_ranks()
    check_world(settings, world)
    ds_config = settings["method_settings"].get("deepspeed") or t.get("deepspeed")  # the method's wins (args.py)
    stage = Zero.from_file(ds_config).stage  # the planner's reading of the DeepSpeed config
    found: dict[str, Any] = {}

    def after_train(model: Any, tokenizer: Any) -> None:
        found["params"] = count_parameters(model)
        # Rank 0 scores; under ZeRO-3 every rank must take part in generate (it gathers the shards).
        if em_items and (rank == 0 or stage == 3):
            found["accuracy"] = exact_match(model, tokenizer, settings["template"], em_items,
                                            int(t.get("max_new_tokens", 16)))
            log.info("exact match on %d held-out items: %.3f", len(em_items), found["accuracy"])

    sync = torch.cuda.synchronize if device == "cuda" else None
    cb = MeasureCallback(mon, warmup_steps=int(t.get("warmup_measure_steps", 0)), sync=sync, after_train=after_train)
    args = llamafactory_args(settings, model_path=model_path, dataset_dir=data_dir, datasets=meta["datasets"],
                             output_dir=output_dir, device=device)
    settings_text = settings_json(settings)
    resume_from = find_resumable(output_dir, settings_text)
    if resume_from is not None:
        args["resume_from_checkpoint"] = str(resume_from)
    log.info("LlamaFactory arguments: %s", json.dumps(args, sort_keys=True))
    apply_host_memory_cap(t.get("host_memory_limit_gb"))
    run_exp(args, callbacks=[cb, mark_checkpoints_callback(settings_text)])  # destroys the process group
    if rank != 0:  # rank 0 reports for the job; its node's monitor measured every GPU of the node
        return {}
    remove_checkpoints(output_dir)  # the run finished: its adapter/model is saved

    window = cb.window
    assert window is not None  # on_train_end raised otherwise
    steps = len(cb.step_times)
    samples_per_step = t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] * world  # every rank's
    samples = samples_per_step * steps
    total, trainable = found["params"]
    fig = training_figures(window, cb.step_times, [samples_per_step] * steps, total,
                           unit="sample", per_param_key="st_samples_per_param_s")
    energy = fig["energy_j"]
    wall = Figure.of
    tokens = (cb.tokens_at_end or 0) - (cb.tokens_at_begin or 0)
    last = cb.losses[-10:]
    eval_loss = cb.eval_metrics.get("eval_loss")
    return {
        "precision": t["precision"],
        **{k: fig[k] for k in (*WINDOW_FIGURES, *ENERGY_FLAGS, "al_s_per_iter", "st_samples_per_param_s",
                               "energy_j_per_sample")},
        # tokens/s = samples/s × (tokens / samples), the window's exact ratio: samples/s's interval
        "tokens_per_s": replace(fig["samples_per_s"].derive(lambda r: r * tokens / samples),
                                source="trainer_num_input_tokens_seen/wall_clock") if tokens > 0
        else Figure.missing("the trainer counted no input tokens"),
        "energy_j_per_token": energy.derive(lambda e: e / tokens, "/tokens") if tokens > 0
        else Figure.missing("the trainer counted no input tokens"),
        "train_loss": wall(sum(last) / len(last), f"mean_last_{len(last)}_logged_steps") if last
        else Figure.missing("the trainer logged no training loss"),
        "val_loss": held_out_loss(eval_loss, cb.eval_batches),  # interval over the evaluation batches
        "accuracy": wall(found["accuracy"], f"exact_match_greedy_{len(em_items)}_heldout")
        if "accuracy" in found else Figure.missing(em_missing),
        "steps": steps,
        "resumed_from_step": cb.start_step,
        "tokens": tokens or None,
        "samples": samples,
        "seconds": window.seconds,
        "params_total": total,
        "params_trainable": trainable,
        "params_trainable_frac": trainable / total,
        "disk_bytes": saved_bytes(output_dir),
        "seq_length": t.get("cutoff_len"),
        "parallel_json": json.dumps({
            "world_size": world, "data_parallel": world, "nodes": 1, "gpus_per_node": world,
            "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "none",
            "deepspeed": ds_config, "zero_stage": stage,
            "gradient_accumulation": t["gradient_accumulation_steps"],
            "measured": "the node of rank 0: every GPU of the job (energy summed), host process tree"
            if world > 1 else "this process's device",
        }, sort_keys=True),
    }
