"""Narrow monkeypatches that let megatron-core 0.16.x run on a CPU-only torch.

megatron-core assumes CUDA in a handful of places that a tiny CPU model still reaches
(RoPE, the MoE router, the model-parallel RNG tracker, the default causal masks).
`apply_cpu_compat()` patches exactly those, and only when `torch.cuda.is_available()`
is False, so the GPU path runs megatron unmodified.

`apply_missing_te_fixes()` is separate: it repairs two import-time bugs of megatron-core
0.16 when Transformer Engine is absent (on CPU *or* GPU). Both checks look at the module
state, so on megatron-core versions that fixed them (0.19 does) it changes nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import torch

_CPU_APPLIED = False
_TE_FIXES_APPLIED = False


def _cpu_device() -> torch.device:
    return torch.device("cpu")


class CpuRNGStatesTracker:
    """Drop-in for megatron's CudaRNGStatesTracker that forks the CPU generator.

    Megatron uses named RNG streams (data-parallel, model-parallel, expert) for
    dropout and weight init; the stock tracker reads/writes CUDA generator states.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()
        self._is_initialized = False

    def is_initialized(self) -> bool:
        return self._is_initialized

    def get_states(self) -> dict[str, torch.Tensor]:
        return dict(self.states_)

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self._is_initialized = True
        self.states_ = states

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} already exists")
        if name in self.states_:
            raise ValueError(f"rng state {name} already exists")
        self._is_initialized = True
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
        if name not in self.states_:
            raise KeyError(f"rng state {name} is not added")
        saved = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(saved)


def _cpu_model_parallel_manual_seed(seed: int, *args: object, **kwargs: object) -> None:
    """CPU version of tensor_parallel.model_parallel_cuda_manual_seed (TP=EP=1 ranks)."""
    from megatron.core.tensor_parallel import random as mrandom

    tracker = CpuRNGStatesTracker()
    # Same stream names and seed offsets as megatron's own function. Like megatron (which
    # seeds only CUDA), leave the global CPU generator to the caller.
    tracker.add(mrandom._DATA_PARALLEL_RNG_TRACKER_NAME, seed)
    tracker.add(mrandom._MODEL_PARALLEL_RNG_TRACKER_NAME, seed + 2718)
    tracker.add(mrandom._EXPERT_PARALLEL_RNG_TRACKER_NAME, seed + 1024)
    mrandom._CUDA_RNG_STATE_TRACKER = tracker
    mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


def _cpu_default_causal_mask(sq: int) -> torch.Tensor:
    return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)


def _cpu_sliding_window_causal_mask(
    sq: int, skv: int, window_size: tuple[int, int]
) -> torch.Tensor:
    m = torch.ones(sq, skv, dtype=torch.bool)
    mu = torch.triu(m, diagonal=skv - sq - window_size[0])
    return ~torch.tril(mu, diagonal=skv - sq + window_size[1])


def apply_missing_te_fixes() -> None:
    """Repair megatron-core 0.16 import bugs when Transformer Engine is not installed.

    No-op when `transformer_engine` is importable, and idempotent.
    """
    global _TE_FIXES_APPLIED
    if _TE_FIXES_APPLIED or importlib.util.find_spec("transformer_engine") is not None:
        return
    from megatron.core.transformer import multi_latent_attention as mla
    from megatron.core.transformer.moe import moe_utils

    # moe_utils imports te_general_gemm only inside `try: import transformer_engine`, yet
    # RouterGatingLinearFunction tests `te_general_gemm is not None` -> NameError without TE.
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None
    # multi_latent_attention decides HAVE_TE from megatron's TE extension module, which
    # imports fine without TE (it defines stubs); it then calls isinstance(x, TELinear)
    # with TELinear None. Nothing TE-backed can exist without TE, so HAVE_TE is False.
    if getattr(mla, "HAVE_TE", False):
        mla.HAVE_TE = False
    _TE_FIXES_APPLIED = True


def apply_cpu_compat() -> None:
    """Patch megatron-core for CPU execution. No-op when CUDA is available; idempotent."""
    global _CPU_APPLIED
    if _CPU_APPLIED or torch.cuda.is_available():
        return
    from megatron.core import tensor_parallel
    from megatron.core.fusions import fused_softmax
    from megatron.core.tensor_parallel import random as mrandom
    from megatron.core.transformer import utils as tutils

    # RoPE (inv_freq.to(current_device())), the MoE router (weight.to(current_device())),
    # buffers and the attention memory buffer all ask for the current CUDA device; a CPU
    # torch raises "Torch not compiled with CUDA enabled". Answer with the CPU device.
    torch.cuda.current_device = _cpu_device  # type: ignore[assignment]

    # The RNG tracker reads/writes CUDA generator states. Replace the seeding function
    # (both the module attribute and the package re-export) so it installs a CPU tracker
    # into the global slot that get_cuda_rng_tracker() returns.
    mrandom.model_parallel_cuda_manual_seed = _cpu_model_parallel_manual_seed
    tensor_parallel.model_parallel_cuda_manual_seed = _cpu_model_parallel_manual_seed
    # If anything asks for the tracker before seeding, hand out an (empty) CPU tracker.
    if not isinstance(mrandom._CUDA_RNG_STATE_TRACKER, CpuRNGStatesTracker):
        mrandom._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
        mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = True

    # The default causal / sliding-window masks are built with device="cuda". They are
    # used by megatron's own DotProductAttention softmax (fused_softmax imports them by
    # name, so patch both places).
    for mod in (tutils, fused_softmax):
        mod.get_default_causal_mask = _cpu_default_causal_mask
        mod.get_sliding_window_causal_mask = _cpu_sliding_window_causal_mask

    apply_missing_te_fixes()
    _CPU_APPLIED = True
