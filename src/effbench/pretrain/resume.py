"""A pretraining cell's resume checkpoint: written every ``checkpoint_interval`` steps, read back
by a restarted job, removed once the cell has trained.

It holds the settings it was written for (an edited cell starts afresh), the step, the model and
the optimizer state, and the loss of every step trained so far, so a resumed run reports the
training loss an uninterrupted one would (the mean of the last 10 steps may reach back past the
interruption). On megatron's stack every rank writes its own file (its experts, its optimizer
shard), with the distributed optimizer's masters and moments in a second file per rank that the
first names.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..atomic import atomic_path
from . import megatron_stack, sharding

if TYPE_CHECKING:
    from .train import Job

log = logging.getLogger("effbench.pretrain")


@dataclass
class Resumed:
    """Where training starts: ``step``, and the losses of steps ``losses_from`` … ``step`` − 1
    (``losses_from`` = ``step``, none, when the checkpoint holds no losses: written by older code)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    losses_from: int = 0


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint beside ``path``, then rename it over ``path``: a full disk raises
    NoSpaceError ('no space left on <folder>') and leaves the previous checkpoint as it was.
    torch.save writes through our file object, so ENOSPC reaches us instead of torch's
    'unexpected pos' / 'iostream error'."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def _losses_of(state: dict[str, Any], step: int) -> tuple[list[float], int]:
    """The checkpoint's per-step losses and the step of the first, if they run up to ``step``;
    ([], step) otherwise (written by older code, or inconsistent)."""
    losses, first = state.get("losses"), int(state.get("losses_from", 0))
    if not isinstance(losses, list) or first + len(losses) != step \
            or not all(isinstance(v, float) and math.isfinite(v) for v in losses):
        return [], step
    return [float(v) for v in losses], first


def resume(job: Job) -> Resumed:
    """Where to start from: a resume checkpoint's step and losses, only if written for these exact
    settings (an edited cell starts afresh) and readable by every rank; step 0 otherwise."""
    state = None
    if job.resume_file.exists():
        state = torch.load(job.resume_file, map_location=job.device, weights_only=False)
        if state.get("settings") != job.shash:
            log.info("ignoring %s: it was written for other settings", job.resume_file)
            state = None
    if job.megatron and state is not None and state.get("params_file") \
            and not (job.resume_dir / state["params_file"]).exists():
        log.info("ignoring %s: its optimizer file %s is missing", job.resume_file, state["params_file"])
        state = None
    # Every rank must resume from the same step (megatron's stack: one file per rank, written
    # one after another; a kill between them leaves ranks at different steps).
    if not _same_on_every_rank(int(state["step"]) if state is not None else -1, job.device):
        if state is not None:
            log.info("ignoring %s: the ranks' resume checkpoints are at different steps", job.resume_file)
        return Resumed()
    assert state is not None
    job.model.load_state_dict(state["model"])
    if job.megatron:
        params = job.resume_dir / state.get("params_file", "optimizer_params.unsharded")  # read only if sharded
        megatron_stack.load_optimizer(job.opt, state["optimizer"], params, job.sharded)
    else:
        job.opt.load_state_dict(state["optimizer"])
    start = int(state["step"])
    losses, first = _losses_of(state, start)
    if first > 0:
        log.info("%s holds no losses before step %d: train_loss averages the steps from there only",
                 job.resume_file, first)
    log.info("resumed from %s at step %d", job.resume_file, start)
    return Resumed(start, losses, first)


def _same_on_every_rank(step: int, device: str) -> bool:
    """Whether every rank holds a resume checkpoint (``step`` ≥ 0) at the same step (a
    collective under data parallelism)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return step >= 0
    dev = device if torch.distributed.get_backend() == "nccl" else "cpu"
    lo, hi = torch.tensor([step], device=dev), torch.tensor([step], device=dev)
    torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
    return int(lo.item()) >= 0 and int(lo.item()) == int(hi.item())


def save_resume(job: Job, step: int, losses: list[float] | None = None, losses_from: int = 0) -> None:
    """The resume checkpoint after ``step`` steps (every rank calls it: ZeRO gathers its shards to
    rank 0, megatron's stack writes one file per rank), with the losses of steps ``losses_from`` …
    ``step`` − 1 (the global batch's, the same on every rank)."""
    extra: dict[str, Any] = {}
    if job.megatron:
        params = job.resume_params_file(step)
        opt_state = megatron_stack.save_optimizer(job.opt, params, job.sharded)
        if job.sharded:
            extra["params_file"] = params.name
    else:
        opt_state = sharding.full_state_dict(job.opt)
        if job.rank != 0:
            return
    if losses is not None:
        extra.update(losses=[float(v) for v in losses], losses_from=losses_from)
    _save(job.resume_file, {"settings": job.shash, "step": step, "model": job.model.state_dict(),
                            "optimizer": opt_state, **extra})
    if job.megatron:  # the previous pair's optimizer file is no longer named by any resume file
        for old in job.resume_dir.glob(f"optimizer_params.rank{job.rank}.step*.pt"):
            if old.name != extra.get("params_file"):
                old.unlink(missing_ok=True)


def clear_resume(job: Job) -> None:
    """The trained cell needs no resume checkpoint (each rank removes its own files)."""
    if job.megatron or job.rank == 0:
        for f in (job.resume_file, *job.resume_dir.glob(f"optimizer_params.rank{job.rank}.step*.pt")):
            f.unlink(missing_ok=True)
