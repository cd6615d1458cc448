"""A verdict per pretraining cell: does its predicted peak fit the GPU, and if not, what would.

The remedy is found by trying settings in a fixed order of cost, fewest changes first:
optimizer sharding (same arithmetic, more communication), expert parallelism for MoE cells
(experts split over the data-parallel ranks, tokens exchanged all-to-all), then a smaller micro-batch (the
global batch is kept by gradient accumulation), then activation recomputation (extra
forward compute). The first combination predicted to fit is named.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from .memory import GB, RECOMPUTES, SHARDINGS, Estimate, cell_settings, estimate

# Where each knob lives in the user config (proposed keys; docs/memory-planner.md).
CONFIG_KEYS = {
    "optimizer_sharding": "pretrain.parallel.optimizer_sharding",
    "expert_parallel": "pretrain.parallel.expert_parallel",
    "micro_batch_size": "pretrain.training.micro_batch_size",
    "recompute": "pretrain.training.recompute",
}


@dataclass(frozen=True)
class Verdict:
    cell: str
    predicted_gb: float
    allowed_gb: float
    estimate: Estimate
    remedy: dict[str, Any] | None  # knob -> value that fits; None when it fits or nothing does
    remedy_gb: float | None  # the predicted peak with the remedy applied
    unsupported_remedy: tuple[dict[str, Any], float] | None = None  # a fit the stage cannot run yet

    @property
    def fits(self) -> bool:
        return self.predicted_gb <= self.allowed_gb

    def message(self) -> str:
        head = (f"pretrain cell {self.cell}: predicted peak {self.predicted_gb:.1f} GB per GPU, "
                f"allowed {self.allowed_gb:g} GB")
        if self.fits:
            return head + " (fits)"
        if self.remedy is None and self.unsupported_remedy is not None:
            change, gb = self.unsupported_remedy
            needs = ", ".join(f"{CONFIG_KEYS[k]}: {v}" for k, v in change.items())
            return head + (f"; it would fit with {needs} (predicted {gb:.1f} GB), which the pretraining stage "
                           "does not implement yet: use a GPU with more memory or a smaller model")
        if self.remedy is None:
            return head + ("; no combination of optimizer sharding, expert parallelism, micro-batch size and "
                           "recompute fits: use a GPU with more memory or a smaller model")
        changes = ", ".join(f"{CONFIG_KEYS[k]}: {v}" for k, v in self.remedy.items())
        return head + f"; set {changes} (predicted {self.remedy_gb:.1f} GB)"


def _options(current: dict[str, Any], global_batch: int, experts: int) -> dict[str, list[Any]]:
    """Values to try per knob, cheapest first, each strictly less memory than the current."""
    dp = current["data_parallel"]
    shard = [s for s in SHARDINGS[SHARDINGS.index(current["optimizer_sharding"]) + 1:] if dp > 1]
    ep = [e for e in range(current["expert_parallel"] + 1, dp + 1) if dp % e == 0 and experts % e == 0]
    mb, mbs = current["micro_batch_size"] // 2, []
    while mb >= 1:
        if global_batch % (mb * dp) == 0:
            mbs.append(mb)
        mb //= 2
    rec = list(RECOMPUTES[RECOMPUTES.index(current["recompute"]) + 1:])
    return {"optimizer_sharding": shard, "expert_parallel": ep, "micro_batch_size": mbs, "recompute": rec}


# Knob -> the values the stage can run (None: every value the planner knows).
Knobs = Mapping[str, "tuple[Any, ...] | None"]


def remedy(settings: dict[str, Any], vocab_size: int, allowed_gb: float,
           knobs: Knobs | None = None) -> tuple[dict[str, Any], float] | None:
    """The first change (fewest knobs, then knob order, then list order) predicted to fit, trying
    only ``knobs`` and their listed values (default: every knob and value the planner knows)."""
    current = cell_settings(settings)
    moe = settings["model"].get("moe") or {}
    options = _options(current, int(settings["training"]["global_batch_size"]), int(moe.get("num_experts", 0)))
    if knobs is not None:
        options = {k: [v for v in vals if knobs[k] is None or v in knobs[k]]  # type: ignore[operator]
                   for k, vals in options.items() if k in knobs}
    knobs = [k for k in options]
    for r in range(1, len(knobs) + 1):
        for subset in itertools.combinations(knobs, r):
            for values in itertools.product(*(options[k] for k in subset)):
                change = dict(zip(subset, values))
                gb = estimate(settings, vocab_size, **change).peak / GB
                if gb <= allowed_gb:
                    return change, gb
    return None


def check_cell(name: str, settings: dict[str, Any], vocab_size: int, allowed_gb: float,
               knobs: Knobs | None = None) -> Verdict:
    """Predict a cell's peak per GPU and, if it does not fit `allowed_gb`, find a remedy among
    ``knobs`` (default: all); with none there, the remedy that needs other knobs is kept as
    ``unsupported_remedy`` so the message can say what the stage would need."""
    est = estimate(settings, vocab_size)
    predicted = est.peak / GB
    found = None if predicted <= allowed_gb else remedy(settings, vocab_size, allowed_gb, knobs)
    other = None
    if predicted > allowed_gb and found is None and knobs is not None:
        other = remedy(settings, vocab_size, allowed_gb)
    change, gb = found if found else (None, None)
    return Verdict(name, predicted, float(allowed_gb), est, change, gb, other)
