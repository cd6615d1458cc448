"""Pretrain one cell with megatron-core: a training loop you can read in one sitting.

megatron-core builds the model (GPTModel, attention variants, MoE); the loop around it is
plain PyTorch (AdamW, warm-up + cosine, gradient accumulation, clipping), because
megatron's optimizer wrapper and dist_checkpointing are CUDA-only and the embedded default
must run the same code on a laptop. On CUDA, a layout that shards the optimizer state or
splits the experts trains under megatron's own DDP and optimizer instead (`megatron_stack`);
on a CPU, optimizer sharding is torch's ZeroRedundancyOptimizer (`sharding`). Batches are a
pure function of (seed, step), so a run resumed from a checkpoint sees exactly the batches
an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..data.tokens import BatchSampler
from ..measure import formulas
from ..measure.figure import Figure
from ..measure.monitor import Monitor, Window
from ..measure.peaks import peak_flops
from ..measure.training import ENERGY_FLAGS, boundary_steps, training_figures
from ..progress import Progress
from ..record import WINDOW_FIGURES, settings_json
from ..torch_device import apply_host_memory_cap, cuda_sync_or_none, pick_device
from . import families, megatron_stack, sharding
from .evaluate import Validation, evaluate
from .experts import full_state_dict as full_model_state
from .mixed_precision import MasterWeightAdamW
from .model import analytic_parameter_counts, count_parameters, flops_per_token
from .parallel import NodeSum, init_single_process, is_node_leader, sum_over_nodes
# _save and _same_on_every_rank are imported from here by the tests of the disk-full and agreement faults
from .resume import Resumed, _save, _same_on_every_rank, clear_resume, resume, save_resume  # noqa: F401

log = logging.getLogger("effbench.pretrain")


def lr_at(step: int, t: dict[str, Any]) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at train_steps."""
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    progress = (step - t["warmup_steps"]) / max(1, t["train_steps"] - t["warmup_steps"])
    return t["min_lr"] + 0.5 * (t["lr"] - t["min_lr"]) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, t: dict[str, Any], device: str, sharded: bool = False) -> Any:
    """AdamW; for bf16 models over fp32 master weights (which also own gradient clipping); with
    ``sharded``, its state split over the data-parallel ranks (ZeRO-1, fp32 models: a bf16 cell
    with sharding runs megatron's distributed optimizer on CUDA instead)."""
    # No weight decay on norms and biases (1-D tensors), as in Megatron and nanoGPT.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (t["adam_beta1"], t["adam_beta2"])
    if sharded:
        if t["precision"] == "bf16":
            raise RuntimeError("bf16 with optimizer sharding runs megatron's distributed optimizer (CUDA)")
        return sharding.zero_adamw(groups, lr=t["lr"], betas=betas)
    if t["precision"] == "bf16":
        return MasterWeightAdamW(groups, lr=t["lr"], betas=betas, fused=device == "cuda", clip_grad=t["clip_grad"])
    return torch.optim.AdamW(groups, lr=t["lr"], betas=betas, fused=device == "cuda")


def _forward_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    b, s = ids.shape
    pos = torch.arange(s, device=ids.device).unsqueeze(0).expand(b, s)
    # With labels, GPTModel returns the per-token loss [b, s]; MoE adds its aux loss to the graph.
    per_token = model(input_ids=ids, position_ids=pos, attention_mask=None, labels=labels)
    return per_token.float().mean()


@dataclass
class Job:
    """One cell's training job on this rank, as set up before its first step."""

    settings: dict[str, Any]
    t: dict[str, Any]  # settings["training"]
    m: dict[str, Any]  # settings["model"]
    device: str
    world: int
    rank: int
    layout: dict[str, Any]
    vocab: int
    seq: int
    accum: int  # micro-batches per rank per step (gradient accumulation)
    model: torch.nn.Module
    train_model: torch.nn.Module  # the DDP wrapper (torch's or megatron's) under data parallelism, else the model
    opt: Any  # torch AdamW, MasterWeightAdamW, ZeroRedundancyOptimizer, or megatron's optimizer
    megatron: bool  # megatron's DDP and optimizer (`megatron_stack`)
    params: dict[str, int]
    sampler: BatchSampler
    shash: str  # the settings' canonical text: a checkpoint is resumed only for the same text
    resume_dir: Path

    @property
    def ddp(self) -> bool:
        return self.train_model is not self.model

    @property
    def sharded(self) -> bool:
        return self.world > 1 and self.layout.get("optimizer_sharding", "none") != "none"

    @property
    def expert_parallel(self) -> int:
        return int(self.layout.get("expert_parallel", 1))

    @property
    def resume_file(self) -> Path:
        # megatron's stack: every rank its own (its experts, its optimizer shard); else rank 0's.
        return self.resume_dir / (f"last.rank{self.rank}.pt" if self.megatron else "last.pt")

    def resume_params_file(self, step: int) -> Path:
        """megatron's distributed optimizer: masters and moments after ``step`` steps, gathered per
        data-parallel group. The step is in the name, and the resume file names the one it pairs
        with: a kill between the two writes leaves the previous pair whole."""
        return self.resume_dir / f"optimizer_params.rank{self.rank}.step{step}.pt"

    @property
    def tokens_per_step(self) -> int:
        return self.t["global_batch_size"] * self.seq


@dataclass
class Trained:
    start: int  # the step training resumed from (0: from scratch)
    step_times: list[float]  # the measured steps' wall times, s
    losses: list[float]  # the loss of every step from losses_from on, before a resume included
    window: Window
    losses_from: int = 0  # the step of losses[0]: 0, unless a resume checkpoint held no losses

    def train_loss(self, last: int = 10) -> Figure:
        """The mean loss of the last ``last`` steps, the same whether or not the run was resumed;
        the source says how many steps it averages, and from which step when the losses before a
        resume are not known."""
        tail = self.losses[-last:]
        since = f"_from_step_{self.losses_from}" if len(tail) < last and self.losses_from > 0 else ""
        return Figure.of(sum(tail) / len(tail), f"mean_last_{len(tail)}_steps{since}")


def train_cell(
    settings: dict[str, Any], data_dir: Path, checkpoint_path: Path, resume_dir: Path, mon: Monitor
) -> dict[str, Any]:
    """Train, evaluate and save one cell; return its figures and counts for the record."""
    apply_host_memory_cap(settings["training"].get("host_memory_limit_gb"))  # per process (rank)
    job = set_up(settings, data_dir, resume_dir)
    trained = train(job, resume(job), mon)
    # Collectives: every rank calls them. Every node's measuring rank adds its node's energy.
    nodes = sum_over_nodes(trained.window.figures()["energy_j"], measures_node=is_node_leader())
    state_bytes = sharding.gathered_state_bytes(job.opt)
    # Rank 0 evaluates, saves and reports for the whole job; with experts split over ranks,
    # every rank takes part in the forward passes and the gathering of the weights.
    if job.rank != 0 and job.expert_parallel == 1:
        clear_resume(job)
        return {}
    validation = evaluate(job.model, job.sampler, job.t, job.seq, job.device)
    weights = trained_weights(job)
    clear_resume(job)
    if job.rank != 0:
        return {}
    save_trained(job, checkpoint_path, weights)
    return figures(job, trained, nodes, validation, checkpoint_path, mon, state_bytes)


def set_up(settings: dict[str, Any], data_dir: Path, resume_dir: Path) -> Job:
    """Seed, initialise torch.distributed, build the model (DDP-wrapped under data parallelism),
    the optimizer and the batch sampler."""
    t = settings["training"]
    m = settings["model"]
    device = pick_device(settings["device"])
    torch.manual_seed(settings["seed"])
    if device == "cpu":
        torch.set_num_threads(t.get("threads", 1))
    layout = settings.get("parallel") or {"world_size": 1}
    ep = int(layout.get("expert_parallel", 1))
    world = init_single_process(expert_parallel=ep)
    if world != layout["world_size"]:
        raise RuntimeError(
            f"{world} processes were launched but pretrain.parallel asks for {layout['world_size']} "
            f"(nodes × gpus_per_node): launch through the workflow's rule, or fix the layout"
        )
    vocab = int(json.loads((data_dir / "meta.json").read_text())["vocab_size"])
    if t["precision"] == "bf16" and device != "cuda":
        raise RuntimeError("pretrain.training.precision bf16 needs a GPU; use fp32 on a CPU")
    # bf16: bf16 parameters and activations, fp32 master weights in the optimizer.
    dtype = "bfloat16" if t["precision"] == "bf16" else "float32"
    model = families.build_model({**m, "params_dtype": dtype, "expert_parallel": ep}, vocab, device)
    # Split experts: this rank's model holds 1/ep of them; the counts are the whole model's.
    if families.family(m) != families.GPT:
        params = families.check_counts(model, m, vocab)
    else:
        params = count_parameters(model, m) if ep == 1 else analytic_parameter_counts(m, vocab)
    megatron = megatron_stack.uses_megatron_stack(settings, device)
    if megatron:
        train_model, opt = megatron_stack.wrap(model, settings)
    else:
        sharded = world > 1 and layout.get("optimizer_sharding", "none") != "none"
        opt = make_optimizer(model, t, device, sharded)
        train_model = _data_parallel(model, device, bool(m["moe"])) if world > 1 else model
    accum = t["global_batch_size"] // (t["micro_batch_size"] * world)
    if accum < 1:
        raise RuntimeError(
            f"global_batch_size {t['global_batch_size']} < micro_batch_size × world size "
            f"({t['micro_batch_size']} × {world})"
        )
    return Job(
        settings=settings, t=t, m=m, device=device, world=world, rank=torch.distributed.get_rank(), layout=layout,
        vocab=vocab, seq=m["seq_length"], accum=accum, model=model, train_model=train_model, opt=opt,
        megatron=megatron, params=params, sampler=BatchSampler.from_dir(data_dir, seed=settings["seed"]),
        shash=settings_json(settings), resume_dir=resume_dir,
    )


def _data_parallel(model: torch.nn.Module, device: str, moe: bool) -> torch.nn.Module:
    """Data parallel: every rank holds the whole model and trains on its slice of each global
    batch; DDP averages the gradients (overlapped with the backward pass). MoE: an expert no
    token reached this step has no gradient."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
        find_unused_parameters=moe, broadcast_buffers=False,
    )


def train(job: Job, resumed: Resumed, mon: Monitor) -> Trained:
    """Steps ``resumed.step`` … train_steps - 1; the window "train" opens after the warm-up steps.
    The losses go on from the resumed ones, and every resume checkpoint carries them."""
    t, total_steps, start = job.t, job.t["train_steps"], resumed.step
    warm = min(t.get("warmup_measure_steps", 0), max(total_steps - start - 1, 0))
    sync = cuda_sync_or_none(job.settings)
    step_times: list[float] = []
    losses: list[float] = list(resumed.losses)
    progress = Progress(total_steps, "step", log, start=start)
    job.model.train()
    window_open = False
    marks = boundary_steps(total_steps - start - warm)
    for step in range(start, total_steps):
        if step - start == warm and not window_open:
            mon.begin_window("train")  # after warm-up: allocator and kernel selection settle first
            window_open = True
        megatron_stack.set_schedule(job.opt, lr_at(step, t), t["weight_decay"])
        t0 = time.monotonic()
        loss_sum = train_step(job, step)
        if sync:
            sync()
        dt = time.monotonic() - t0
        if job.world > 1:  # the global batch's loss: the mean over ranks
            loss_sum = loss_sum.clone()
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= job.world
        loss = float(loss_sum) / job.accum
        if not math.isfinite(loss):
            raise RuntimeError(f"training diverged at step {step}: loss {loss}")
        losses.append(loss)
        if window_open:
            step_times.append(dt)
            if len(step_times) - 1 in marks:  # a sub-window boundary (batch means, docs/noise.md)
                mon.mark()
        if job.rank == 0:
            progress.update(step + 1, items=(step + 1 - start) * job.tokens_per_step, extra=f"loss {loss:.4f}")
        if (step + 1) % t["checkpoint_interval"] == 0 and step + 1 < total_steps:
            save_resume(job, step + 1, losses, resumed.losses_from)
    if not window_open:
        raise RuntimeError("no training steps left to measure (the resume checkpoint is already at train_steps)")
    return Trained(start, step_times, losses, mon.end_window("train"), resumed.losses_from)


def train_step(job: Job, step: int) -> torch.Tensor:
    """One optimizer step over this rank's share of the step's global batch; returns the sum of
    this rank's micro-batch losses (a tensor, not yet synchronised)."""
    t, world, accum = job.t, job.world, job.accum
    if job.megatron:
        megatron_stack.zero_grad(job.train_model, job.opt)
    else:
        job.opt.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=job.device)
    for micro in range(accum):
        # The step's global batch is one draw of global_batch_size windows (seeded by the
        # step); micro-batch `micro` of rank `rank` is its slice number micro × world + rank,
        # so every layout (and a resumed run) trains on the same global batches.
        x, y = job.sampler.train_batch(step, t["micro_batch_size"], job.seq, rank=micro * world + job.rank,
                                       world_size=accum * world)
        ids = torch.from_numpy(x).to(job.device)
        labels = torch.from_numpy(y).to(job.device)
        # Gradient accumulation: all-reduce once, on the last micro-batch of the step.
        last = micro == accum - 1
        with (job.train_model.no_sync() if job.ddp and not last else contextlib.nullcontext()):
            loss = _forward_loss(job.train_model, ids, labels)
            (loss / accum).backward()
        loss_sum += loss.detach()
    if job.megatron:  # its optimizer clips the fp32 gradients itself
        megatron_stack.step(job.train_model, job.opt)
        return loss_sum
    # ZeRO: every rank holds the whole all-reduced gradient, so the norm is the global one.
    if t["clip_grad"] > 0 and not isinstance(job.opt, MasterWeightAdamW):
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), t["clip_grad"])
    job.opt.step()
    return loss_sum


def trained_weights(job: Job) -> dict[str, Any]:
    """The trained weights: bf16 runs on the torch path keep them in full precision as the
    optimizer's masters; megatron's stack saves the model's own (bf16) weights, its masters being
    sharded; split experts are gathered (a collective over the expert-parallel ranks)."""
    opt = job.opt
    if isinstance(opt, MasterWeightAdamW):
        return opt.master_state_dict(job.model)
    moe = job.m["moe"]
    local = int(moe["num_experts"]) // job.expert_parallel if moe else 0
    return full_model_state(job.model, job.expert_parallel, local)


def save_trained(job: Job, checkpoint_path: Path, weights: dict[str, Any]) -> None:
    _save(checkpoint_path, {"settings": job.shash, "model_settings": job.m, "vocab_size": job.vocab,
                            "step": job.t["train_steps"], "model": weights})


def peak_per_device(settings: dict[str, Any], device: str, device_name: str | None) -> tuple[float | None, str]:
    """(dense peak FLOP/s of one device, source): the config's ``measure.peak_flops.<dtype>`` where
    stated, else the datasheet table (GPUs only), else (None, why)."""
    dtype = "bf16" if settings["training"]["precision"] == "bf16" else "fp32"
    stated = (settings["measure"].get("peak_flops") or {}).get(dtype)
    if stated:
        return float(stated), f"stated_measure.peak_flops.{dtype}"
    if device != "cuda":
        return None, "peak FLOP/s of a CPU is not tabulated"
    return peak_flops(device_name, dtype)


def figures(job: Job, trained: Trained, nodes: NodeSum, validation: Validation, checkpoint_path: Path,
            mon: Monitor, state_bytes: list[int]) -> dict[str, Any]:
    """The record's values: figures over the measured window, counts and the layout."""
    t, m, world, params = job.t, job.m, job.world, job.params
    step_times, window = trained.step_times, trained.window
    measured_tokens = job.tokens_per_step * len(step_times)  # the global batch: every rank's tokens
    fig = training_figures(window, step_times, [job.tokens_per_step] * len(step_times), params["total"],
                           unit="token", per_param_key="tt_tokens_per_param_s")
    if nodes.count > 1:  # every node's energy, not rank 0's node alone
        fig["energy_j"] = nodes.total
        fig["aec_w"] = nodes.total.derive(lambda e: formulas.average_power_w(e, window.seconds), "/window")
        fig["energy_j_per_token"] = nodes.total.derive(lambda e: e / measured_tokens, "/tokens")
    fpt = flops_per_token(m, job.seq, vocab_size=job.vocab)  # the output projection is a real per-token matmul
    # MFU: the FLOPs of every rank's tokens over the peak of every device that did them; its
    # interval is the token rate's (FLOPs per token and the peak are constants).
    peak, peak_src = peak_per_device(job.settings, job.device, str(mon.describe().get("device_name")))
    peak_src_all = peak_src if world == 1 else f"{peak_src}_x_{world}_devices"
    rate = fig["tokens_per_s"]
    return {
        "precision": t["precision"],
        "model_family": families.family(m),
        "kernel_path": families.kernel_path(m, job.device),
        **{k: fig[k] for k in (*WINDOW_FIGURES, *ENERGY_FLAGS, "al_s_per_iter", "tt_tokens_per_param_s",
                               "tokens_per_s", "energy_j_per_token")},
        "mfu_frac": replace(rate.derive(lambda r: formulas.mfu(fpt, r, 1.0, peak * world)),
                            source=f"analytic_flops/{peak_src_all}") if peak else Figure.missing(peak_src),
        **validation.figures(),  # val_loss, ppl: intervals over the evaluation batches
        "train_loss": trained.train_loss(),
        "steps": len(step_times),
        "resumed_from_step": trained.start,
        "tokens": measured_tokens,
        "samples": t["global_batch_size"] * len(step_times),
        "seconds": window.seconds,
        "params_total": params["total"],
        "params_active": params["active_non_embedding"] + params["embedding"],
        "params_non_embedding": params["non_embedding"],
        "flops_per_token": float(fpt),
        "disk_bytes": checkpoint_path.stat().st_size,
        "seq_length": job.seq,
        "parallel_json": json.dumps({
            "world_size": world, "data_parallel": world, "tensor_parallel": 1, "pipeline_parallel": 1,
            "nodes": job.layout.get("nodes", 1), "gpus_per_node": job.layout.get("gpus_per_node", 1),
            "launcher": "torchrun" if world > 1 else "none", "backend": torch.distributed.get_backend(),
            "gradient_accumulation": job.accum,
            "optimizer_sharding": job.layout.get("optimizer_sharding", "none"),
            "expert_parallel": job.expert_parallel,
            "engine": "megatron-core DDP + optimizer" if job.megatron else
            ("torch DDP" if job.ddp else "single process") + (" + ZeroRedundancyOptimizer" if job.sharded else ""),
            "moe_grouped_gemm": bool(getattr(job.model.config, "moe_grouped_gemm", False)),
            # Bytes of optimizer state (fp32 masters where the optimizer keeps them, AdamW moments)
            # each rank held at the end of training, in rank order (measured).
            "optimizer_state_bytes_per_rank": state_bytes,
            "measured": "node of rank 0" if nodes.count == 1 else
            f"energy: all {nodes.count} nodes; memory, utilisation: node of rank 0",
        }, sort_keys=True),
    }


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
