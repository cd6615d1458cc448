"""Candidate speed levers for the pretraining step (issue 13 part 4), each built from the stage's
own code and timed side by side in one process on one GPU; used by gpu_pretrain_check.py.

A lever is a set of atoms joined by '+' ("compile+fused_ce"); "baseline" is the empty set,
the stage's path at world size 1: megatron's GPTModel on the local spec with SDPA attention
(`build_gpt_model`), bf16 weights over fp32 masters with clipping (`make_optimizer` →
MasterWeightAdamW), the loss of `train._forward_loss`. Levers that the stage has no setting
for are built here only: the model config is changed by wrapping
`model.transformer_config_from_settings` while the model is built, the loss by turning the
output layer into a pass-through. No src/ file changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

# atom -> what it does (printed with the results).
ATOMS: dict[str, str] = {
    "fused_ce": "output projection + cross-entropy in token chunks (plain torch, no full logits)",
    "liger_ce": "liger-kernel's fused linear cross-entropy (only if liger_kernel imports)",
    "mcore_fusions": "megatron's fused SwiGLU (bias_activation_fusion) and native fused cross-entropy",
    "recompute_attn": "megatron selective recompute of core attention (its default module)",
    "recompute_mlp": "megatron selective recompute of the MLP and both norms",
    "mcore_ddp": "megatron DDP (fp32 grad buffer, overlapped reduce) + get_megatron_optimizer",
    "mcore_distopt": "megatron DDP + distributed optimizer (ZeRO-1)",
    "fused_adam": "torch fused AdamW inside megatron's optimizer (with mcore_ddp / mcore_distopt)",
    "compile": "torch.compile of each transformer layer (regional: one compiled graph reused)",
    "compile_model": "torch.compile of the whole GPTModel (slow to compile; not in the defaults)",
}

DEFAULT_LEVERS = [
    "baseline", "fused_ce", "liger_ce", "mcore_fusions", "recompute_attn", "recompute_mlp",
    "mcore_ddp", "mcore_distopt", "mcore_distopt+fused_adam", "compile", "compile+fused_ce",
    # the candidate stack for sharded cells on several GPUs (the stage's megatron path)
    "compile+fused_ce+mcore_distopt+fused_adam", "baseline",
]

_EXCLUSIVE = [{"fused_ce", "liger_ce"}, {"mcore_ddp", "mcore_distopt"}, {"compile", "compile_model"}]

# What a lever means at world size 1 (the single-GPU check): said beside its number.
NOTES = {
    "mcore_ddp": "world size 1: nothing to reduce, so the overlap itself saves nothing here; the number "
                 "is megatron's grad buffer and optimizer (torch AdamW, not fused, without TE/apex)",
    "mcore_distopt": "world size 1: the distributed optimizer shards over 1 rank (no memory saved); "
                     "it only pays with DP > 1",
    "recompute_attn": "SDPA's flash/cuDNN kernels already keep no score matrix: little memory to win",
}


@dataclass(frozen=True)
class Lever:
    name: str
    atoms: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> "Lever":
        atoms = frozenset() if text == "baseline" else frozenset(text.split("+"))
        unknown = atoms - set(ATOMS)
        if unknown:
            raise ValueError(f"unknown lever atom(s) {sorted(unknown)} in {text!r}; known: baseline, {sorted(ATOMS)}")
        for group in _EXCLUSIVE:
            if len(atoms & group) > 1:
                raise ValueError(f"{text!r}: at most one of {sorted(group)}")
        if "fused_adam" in atoms and not atoms & {"mcore_ddp", "mcore_distopt"}:
            raise ValueError(f"{text!r}: fused_adam needs mcore_ddp or mcore_distopt")
        return cls(text, atoms)

    @property
    def megatron_stack(self) -> bool:
        return bool(self.atoms & {"mcore_ddp", "mcore_distopt"})


# ------------------------------------------------------------------------------------------
# Building one lever's training step from the stage's code
# ------------------------------------------------------------------------------------------


def config_overrides(atoms: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "mcore_fusions" in atoms:
        out.update(bias_activation_fusion=True, cross_entropy_loss_fusion=True, cross_entropy_fusion_impl="native")
    recompute = [*(["core_attn"] if "recompute_attn" in atoms else []),
                 *(["mlp", "layernorm"] if "recompute_mlp" in atoms else [])]
    if recompute:
        out.update(recompute_granularity="selective", recompute_modules=recompute)
    return out


@contextlib.contextmanager
def patched_config(overrides: dict[str, Any]) -> Iterator[None]:
    """While a model is built, `build_gpt_model` sees its TransformerConfig with ``overrides``
    (dataclasses.replace re-runs megatron's checks)."""
    from effbench.pretrain import model as model_mod

    original = model_mod.transformer_config_from_settings
    if overrides:
        model_mod.transformer_config_from_settings = (
            lambda settings, device="cpu": dataclasses.replace(original(settings, device), **overrides))
    try:
        yield
    finally:
        model_mod.transformer_config_from_settings = original


@contextlib.contextmanager
def fused_torch_adamw() -> Iterator[None]:
    """megatron without TE/apex builds `torch.optim.AdamW(...)` (foreach); make it fused while
    `get_megatron_optimizer` runs."""
    original = torch.optim.AdamW

    class FusedAdamW(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "fused": True})

    torch.optim.AdamW = FusedAdamW  # type: ignore[misc]
    try:
        yield
    finally:
        torch.optim.AdamW = original  # type: ignore[misc]


def _set_dynamo_limits() -> None:
    """24 identical layers compile once, but megatron's per-layer attributes may add guards:
    leave room for a recompile per layer instead of silently falling back to eager."""
    cfg = torch._dynamo.config
    for name, value in (("recompile_limit", 64), ("cache_size_limit", 64),
                        ("accumulated_recompile_limit", 512), ("accumulated_cache_size_limit", 512)):
        if hasattr(cfg, name):
            setattr(cfg, name, max(int(getattr(cfg, name)), value))


def _positions(ids: torch.Tensor) -> torch.Tensor:
    b, s = ids.shape
    return torch.arange(s, device=ids.device).unsqueeze(0).expand(b, s)


def fused_loss(gpt: torch.nn.Module, atoms: frozenset[str], chunk_rows: int) -> Callable[..., torch.Tensor]:
    """A loss function (model, ids, labels) -> mean loss that never builds the full logits:
    the output layer becomes a pass-through (GPTModel then returns the final hidden states) and
    the projection is done inside the fused loss."""
    from chunked_ce import chunked_linear_cross_entropy, liger_loss

    out = gpt.output_layer
    weight = gpt.shared_embedding_or_output_weight if gpt.share_embeddings_and_output_weights else (lambda: out.weight)
    out.forward = lambda hidden, weight=None, runtime_gather_output=None: (hidden, None)  # instance attribute
    if "liger_ce" in atoms:
        fn = liger_loss()
    else:
        fn = lambda h, w, y: chunked_linear_cross_entropy(h, w, y, chunk_rows)  # noqa: E731

    def loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = model(input_ids=ids, position_ids=_positions(ids), attention_mask=None)  # [b, s, H]
        return fn(hidden.reshape(-1, hidden.shape[-1]), weight(), labels.reshape(-1))

    return loss


@dataclass
class Trainer:
    """One lever's model and its optimizer step."""

    model: torch.nn.Module
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # one optimizer step; returns the loss, unsynced
    notes: list[str] = field(default_factory=list)


def build_trainer(lever: Lever, settings: dict[str, Any], vocab: int, chunk_rows: int) -> Trainer:
    from megatron.core import tensor_parallel

    from effbench.pretrain import megatron_stack
    from effbench.pretrain.model import build_gpt_model
    from effbench.pretrain.parallel import init_single_process
    from effbench.pretrain.train import _forward_loss, make_optimizer

    atoms, t = lever.atoms, settings["training"]
    init_single_process()  # idempotent: the probe's set_up may have run it already
    if "liger_ce" in atoms:
        import liger_kernel  # noqa: F401 - fail before building anything when it is absent
    seed = int(settings["seed"])
    torch.manual_seed(seed)  # every lever starts from the same weights: first losses comparable
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    with patched_config(config_overrides(atoms)):
        model = build_gpt_model({**settings["model"], "params_dtype": "bfloat16"}, vocab, "cuda")
    if atoms & {"compile", "compile_model"}:
        _set_dynamo_limits()
    if "compile" in atoms:
        for layer in model.decoder.layers:
            layer.compile()  # in place: parameter names and the optimizer's view stay as they are
    loss_fn = fused_loss(model, atoms, chunk_rows) if atoms & {"fused_ce", "liger_ce"} else _forward_loss
    notes = [NOTES[a] for a in sorted(atoms) if a in NOTES]
    if lever.megatron_stack:
        sharding = "optimizer" if "mcore_distopt" in atoms else "none"
        s = {**settings, "parallel": {**settings["parallel"], "optimizer_sharding": sharding}}
        with fused_torch_adamw() if "fused_adam" in atoms else contextlib.nullcontext():
            train_model, opt = megatron_stack.wrap(model, s)
        if "compile_model" in atoms:
            train_model.module = torch.compile(model)

        def step(ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            megatron_stack.set_schedule(opt, t["lr"], t["weight_decay"])
            megatron_stack.zero_grad(train_model, opt)
            loss = loss_fn(train_model, ids, labels)
            loss.backward()
            megatron_stack.step(train_model, opt)  # clips in fp32; reads the norm back (a sync)
            return loss.detach()

        return Trainer(model, step, notes)

    opt = make_optimizer(model, t, "cuda")  # MasterWeightAdamW: fp32 masters, fused AdamW, fp32 clipping
    run_model = torch.compile(model) if "compile_model" in atoms else model

    def step(ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # train.train_step at world size 1
        megatron_stack.set_schedule(opt, t["lr"], t["weight_decay"])
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(run_model, ids, labels)
        loss.backward()
        opt.step()
        return loss.detach()

    return Trainer(model, step, notes)


# ------------------------------------------------------------------------------------------
# Timing and statistics
# ------------------------------------------------------------------------------------------


def median_interval(xs: list[float]) -> tuple[float, float, float, float]:
    """(median, low, high, coverage): a distribution-free interval for the median from order
    statistics, the narrowest [x(j), x(n+1-j)] whose binomial coverage is at least 95 %."""
    s, n = sorted(xs), len(xs)
    cdf, j = 0.0, 0
    for k in range(n + 1):
        cdf += math.comb(n, k) / 2**n
        if cdf > 0.025:
            break
        j = k + 1
    j = max(j, 1)  # n < 6: [min, max], whose coverage is below 95 % (reported)
    coverage = 1 - 2 * sum(math.comb(n, k) for k in range(j)) / 2**n
    return statistics.median(s), s[j - 1], s[n - j], coverage


@dataclass
class Timed:
    wall_s: list[float]  # per timed step, to the GPU's end (synchronised)
    issue_s: list[float]  # per timed step, until the host had issued it (before the sync)
    first_loss: float  # the first (warm-up) step's loss: same weights and batch for every lever
    last_loss: float
    warmup_s: float  # the warm-up steps (compilation happens here)


def time_steps(step: Callable[[int], torch.Tensor], warmup: int, steps: int) -> Timed:
    """``step(i)`` runs step i and returns its loss without synchronising; the first warm-up
    step's loss is read (a sync), the timed steps are synchronised one by one, as the stage does."""
    t0 = time.perf_counter()
    first = float(step(0))
    for i in range(1, warmup):
        step(i)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    wall, issue, losses = [], [], []
    for i in range(warmup, warmup + steps):
        a = time.perf_counter()
        loss = step(i)
        b = time.perf_counter()
        torch.cuda.synchronize()
        wall.append(time.perf_counter() - a)
        issue.append(b - a)
        losses.append(loss)
    return Timed(wall, issue, first, float(losses[-1]), warmup_s)


def summarise(timed: Timed, tokens_per_step: int, flops_per_token: float, peak_flops: float) -> dict[str, Any]:
    med, lo, hi, cov = median_interval(timed.wall_s)
    return {
        "step_ms": round(med * 1e3, 2), "step_ms_ci95": [round(lo * 1e3, 2), round(hi * 1e3, 2)],
        "ci_coverage": round(cov, 4), "timed_steps": len(timed.wall_s),
        "host_issue_ms": round(statistics.median(timed.issue_s) * 1e3, 2),
        "tokens_per_s": round(tokens_per_step / med),
        "mfu": round(flops_per_token * tokens_per_step / med / peak_flops, 4),
        "mfu_ci95": [round(flops_per_token * tokens_per_step / hi / peak_flops, 4),
                     round(flops_per_token * tokens_per_step / lo / peak_flops, 4)],
        "first_loss": round(timed.first_loss, 5), "last_loss": round(timed.last_loss, 5),
        "warmup_s": round(timed.warmup_s, 1), "step_ms_all": [round(x * 1e3, 2) for x in timed.wall_s],
    }


def ratio_to(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Step time over the baseline's (same process); the bounds combine the two medians' 95 %
    intervals (conservative: lever low / baseline high, lever high / baseline low)."""
    (lo, hi), (blo, bhi) = row["step_ms_ci95"], base["step_ms_ci95"]
    return {"ratio_vs_baseline": round(row["step_ms"] / base["step_ms"], 4),
            "ratio_bounds": [round(lo / bhi, 4), round(hi / blo, 4)],
            "first_loss_minus_baseline": round(row["first_loss"] - base["first_loss"], 5)}


def free_cuda() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def run_lever(name: str, settings: dict[str, Any], vocab: int, batches: list[tuple[torch.Tensor, torch.Tensor]],
              *, warmup: int, steps: int, flops_per_token: float, peak_flops: float, chunk_rows: int) -> dict[str, Any]:
    """One lever's row: its figures, or its error (the caller goes on with the next lever)."""
    from torch._dynamo.utils import counters

    row: dict[str, Any] = {"lever": name}
    trainer = None
    try:
        lever = Lever.parse(name)
        row["what"] = [ATOMS[a] for a in sorted(lever.atoms)] or ["the stage's path (world size 1)"]
        if "liger_ce" in lever.atoms and importlib.util.find_spec("liger_kernel") is None:
            return {**row, "status": "skipped", "why": "liger-kernel is not installed (carry its wheel to measure it)"}
        counters.clear()
        row["residual_alloc_gb_before"] = round(torch.cuda.memory_allocated() / 1e9, 2)
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer = build_trainer(lever, settings, vocab, chunk_rows)
        row["build_s"] = round(time.perf_counter() - t0, 1)
        timed = time_steps(lambda i: trainer.step(*batches[i % len(batches)]), warmup, steps)
        tokens = batches[0][0].numel()
        row.update(summarise(timed, tokens, flops_per_token, peak_flops))
        row["max_alloc_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        if lever.atoms & {"compile", "compile_model"}:
            row["dynamo_graph_breaks"] = sum(counters["graph_break"].values())
            row["dynamo_unique_graphs"] = counters["stats"].get("unique_graphs", 0)
        row["notes"] = trainer.notes
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - fail soft: one lever's error is its row
        row["status"] = "error"
        row["error"] = f"{type(exc).__name__}: {str(exc)[:600]}"
        row["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    finally:
        del trainer
        if "compile" in name:
            torch._dynamo.reset()
        free_cuda()
    return row
