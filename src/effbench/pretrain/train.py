"""Pretrain one cell with megatron-core: a training loop you can read in one sitting.

megatron-core builds the model (GPTModel, attention variants, MoE); the loop around it is
plain PyTorch (AdamW, warm-up + cosine, gradient accumulation, clipping), because
megatron's optimizer wrapper and dist_checkpointing are CUDA-only and the embedded default
must run the same code on a laptop. Batches are a pure function of (seed, step), so a run
resumed from a checkpoint sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from ..data.tokens import BatchSampler
from ..measure import formulas
from ..measure.figure import Figure
from ..measure.monitor import Monitor
from ..measure.peaks import peak_flops
from ..progress import Progress
from ..record import settings_json
from ..torch_device import cuda_sync_or_none, free_cuda, pick_device  # noqa: F401 (re-exported)
from .mixed_precision import MasterWeightAdamW
from .model import build_gpt_model, count_parameters, flops_per_token
from .parallel import init_single_process

log = logging.getLogger("effbench.pretrain")


def lr_at(step: int, t: dict[str, Any]) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at train_steps."""
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    progress = (step - t["warmup_steps"]) / max(1, t["train_steps"] - t["warmup_steps"])
    return t["min_lr"] + 0.5 * (t["lr"] - t["min_lr"]) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, t: dict[str, Any], device: str) -> torch.optim.AdamW | MasterWeightAdamW:
    """AdamW; for bf16 models over fp32 master weights (which also own gradient clipping)."""
    # No weight decay on norms and biases (1-D tensors), as in Megatron and nanoGPT.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (t["adam_beta1"], t["adam_beta2"])
    if t["precision"] == "bf16":
        return MasterWeightAdamW(groups, lr=t["lr"], betas=betas, fused=device == "cuda", clip_grad=t["clip_grad"])
    return torch.optim.AdamW(groups, lr=t["lr"], betas=betas, fused=device == "cuda")


def _forward_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    b, s = ids.shape
    pos = torch.arange(s, device=ids.device).unsqueeze(0).expand(b, s)
    # With labels, GPTModel returns the per-token loss [b, s]; MoE adds its aux loss to the graph.
    per_token = model(input_ids=ids, position_ids=pos, attention_mask=None, labels=labels)
    return per_token.float().mean()


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def train_cell(
    settings: dict[str, Any], data_dir: Path, checkpoint_path: Path, resume_dir: Path, mon: Monitor
) -> dict[str, Any]:
    """Train, evaluate and save one cell; return its figures and counts for the record."""
    t = settings["training"]
    m = settings["model"]
    device = pick_device(settings["device"])
    torch.manual_seed(settings["seed"])
    if device == "cpu":
        torch.set_num_threads(t.get("threads", 1))
    world = init_single_process()
    rank = torch.distributed.get_rank()
    layout = settings.get("parallel") or {"world_size": 1}
    if world != layout["world_size"]:
        raise RuntimeError(
            f"{world} processes were launched but pretrain.parallel asks for {layout['world_size']} "
            f"(nodes × gpus_per_node): launch through the workflow's rule, or fix the layout"
        )
    meta = json.loads((data_dir / "meta.json").read_text())
    vocab = int(meta["vocab_size"])
    if t["precision"] == "bf16" and device != "cuda":
        raise RuntimeError("pretrain.training.precision bf16 needs a GPU; use fp32 on a CPU")
    # bf16: bf16 parameters and activations, fp32 master weights in the optimizer.
    dtype = "bfloat16" if t["precision"] == "bf16" else "float32"
    model = build_gpt_model({**m, "params_dtype": dtype}, vocab, device)
    params = count_parameters(model, m)
    opt = make_optimizer(model, t, device)
    # Data parallel: every rank holds the whole model and trains on its slice of each global
    # batch; DDP averages the gradients (overlapped with the backward pass). Rank 0 evaluates,
    # saves and reports. MoE: an expert no token reached this step has no gradient.
    ddp = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
            find_unused_parameters=bool(m["moe"]), broadcast_buffers=False,
        )
    train_model = ddp if ddp is not None else model
    sync = torch.cuda.synchronize if device == "cuda" else None
    accum = t["global_batch_size"] // (t["micro_batch_size"] * world)
    if accum < 1:
        raise RuntimeError(
            f"global_batch_size {t['global_batch_size']} < micro_batch_size × world size "
            f"({t['micro_batch_size']} × {world})"
        )
    seq = m["seq_length"]
    sampler = BatchSampler.from_dir(data_dir, seed=settings["seed"])
    shash = settings_json(settings)

    # Resume only from a checkpoint of these exact settings: an edited cell starts afresh.
    start = 0
    resume_file = resume_dir / "last.pt"
    if resume_file.exists():
        state = torch.load(resume_file, map_location=device, weights_only=False)
        if state.get("settings") == shash:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start = int(state["step"])
            log.info("resumed from %s at step %d", resume_file, start)
        else:
            log.info("ignoring %s: it was written for other settings", resume_file)

    total_steps = t["train_steps"]
    warm = min(t.get("warmup_measure_steps", 0), max(total_steps - start - 1, 0))
    tokens_per_step = t["global_batch_size"] * seq
    step_times: list[float] = []
    losses: list[float] = []
    progress = Progress(total_steps, "step", log, start=start)
    model.train()
    window_open = False
    for step in range(start, total_steps):
        if step - start == warm and not window_open:
            mon.begin_window("train")  # after warm-up: allocator and kernel selection settle first
            window_open = True
        for g in opt.param_groups:
            g["lr"] = lr_at(step, t)
        t0 = time.monotonic()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(accum):
            # The step's global batch is one draw of global_batch_size windows (seeded by the
            # step); micro-batch `micro` of rank `rank` is its slice number micro × world + rank,
            # so every layout (and a resumed run) trains on the same global batches.
            x, y = sampler.train_batch(step, t["micro_batch_size"], seq, rank=micro * world + rank,
                                       world_size=accum * world)
            ids = torch.from_numpy(x).to(device)
            labels = torch.from_numpy(y).to(device)
            # Gradient accumulation: all-reduce once, on the last micro-batch of the step.
            last = micro == accum - 1
            with (ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()):
                loss = _forward_loss(train_model, ids, labels)
                (loss / accum).backward()
            loss_sum += loss.detach()
        if t["clip_grad"] > 0 and not isinstance(opt, MasterWeightAdamW):
            torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip_grad"])
        opt.step()
        if sync:
            sync()
        dt = time.monotonic() - t0
        if world > 1:  # the global batch's loss: the mean over ranks
            loss_sum = loss_sum.clone()
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= world
        step_loss = float(loss_sum) / accum
        if not math.isfinite(step_loss):
            raise RuntimeError(f"training diverged at step {step}: loss {step_loss}")
        losses.append(step_loss)
        if window_open:
            step_times.append(dt)
        if rank == 0:
            progress.update(step + 1, items=(step + 1 - start) * tokens_per_step, extra=f"loss {step_loss:.4f}")
        if rank == 0 and (step + 1) % t["checkpoint_interval"] == 0 and step + 1 < total_steps:
            _save(resume_file, {"settings": shash, "step": step + 1, "model": model.state_dict(),
                                "optimizer": opt.state_dict()})
    if not window_open:
        raise RuntimeError("no training steps left to measure (the resume checkpoint is already at train_steps)")
    window = mon.end_window("train")
    if rank != 0:  # rank 0 evaluates, saves and reports for the whole job
        return {}

    val_loss = evaluate(model, sampler, t, seq, device)
    # The trained weights in full precision (bf16 runs keep them as the optimizer's masters).
    weights = opt.master_state_dict(model) if isinstance(opt, MasterWeightAdamW) else model.state_dict()
    _save(checkpoint_path, {"settings": shash, "model_settings": m, "vocab_size": vocab, "step": total_steps,
                            "model": weights})
    if resume_file.exists():
        resume_file.unlink()

    measured_tokens = tokens_per_step * len(step_times)
    busy = sum(step_times)
    fig = window.figures()
    wall = Figure.of
    fpt = flops_per_token(m, seq, vocab_size=vocab)  # the output projection is a real per-token matmul
    dtype = "bf16" if t["precision"] == "bf16" else "fp32"
    peak, peak_src = peak_flops(str(mon.describe().get("device_name")), dtype) if device == "cuda" else (
        None, "peak FLOP/s of a CPU is not tabulated")
    energy = fig["energy_j"]
    return {
        "precision": t["precision"],
        **{k: fig[k] for k in ("amu_gb", "amu_frac", "peak_mem_gb", "pcu_frac", "aec_w", "energy_j")},
        "al_s_per_iter": wall(formulas.average_latency(step_times), "wall_clock_per_step"),
        "tt_tokens_per_param_s": wall(
            formulas.token_throughput(measured_tokens, params["total"], busy), "wall_clock_tokens/params_total"),
        "tokens_per_s": wall(measured_tokens / busy, "wall_clock"),
        "energy_j_per_token": energy.derive(lambda e: e / measured_tokens, "/tokens"),
        "mfu_frac": wall(formulas.mfu(fpt, measured_tokens, busy, peak), f"analytic_flops/{peak_src}")
        if peak else Figure.missing(peak_src),
        "val_loss": wall(val_loss, "validation_mean_nll"),
        "ppl": wall(formulas.perplexity(val_loss), "exp(val_loss)"),
        "train_loss": wall(sum(losses[-10:]) / len(losses[-10:]), "mean_last_10_steps"),
        "steps": len(step_times),
        "resumed_from_step": start,
        "tokens": measured_tokens,
        "samples": t["global_batch_size"] * len(step_times),
        "seconds": window.seconds,
        "params_total": params["total"],
        "params_active": params["active_non_embedding"] + params["embedding"],
        "params_non_embedding": params["non_embedding"],
        "flops_per_token": float(fpt),
        "disk_bytes": checkpoint_path.stat().st_size,
        "seq_length": seq,
        "parallel_json": json.dumps({
            "world_size": world, "data_parallel": world, "tensor_parallel": 1, "pipeline_parallel": 1,
            "nodes": layout.get("nodes", 1), "gpus_per_node": layout.get("gpus_per_node", 1),
            "launcher": "torchrun" if world > 1 else "none", "backend": torch.distributed.get_backend(),
            "gradient_accumulation": accum, "measured": "node of rank 0",
        }, sort_keys=True),
    }


@torch.no_grad()
def evaluate(model: torch.nn.Module, sampler: BatchSampler, t: dict[str, Any], seq: int, device: str) -> float:
    """Mean token NLL over the first ``eval_batches`` contiguous windows of the validation split."""
    model.eval()
    total, n = 0.0, 0
    for x, y in sampler.eval_batches(t["micro_batch_size"], seq, t["eval_batches"]):
        ids, labels = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        loss = _forward_loss(model, ids, labels)
        total += float(loss) * ids.numel()
        n += ids.numel()
    model.train()
    if n == 0:
        raise RuntimeError("the validation split is shorter than one batch")
    return total / n


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
