"""The trainer callback that hooks the shared measurement core into LlamaFactory's loop.

Hugging Face's Trainer (which LlamaFactory drives) calls it at each optimizer step: the
measured window opens at the start of step ``warmup_measure_steps`` and closes at the end
of training, each step's wall time is taken from one step end to the next (after a device
sync), and the logged training loss and the final held-out evaluation are kept. After the
window closes, it scores exact-match accuracy by greedy generation on held-out items, then
watches the held-out evaluation: each batch's loss, as the model returns it to the Trainer, and
its samples (every rank's, gathered), for the held-out loss's interval (:mod:`.heldout`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from ..measure.monitor import Monitor, Window
from ..measure.training import boundary_steps
from ..progress import Progress
from .heldout import EvalBatch

log = logging.getLogger("effbench.finetune")


class MeasureCallback(TrainerCallback):
    def __init__(
        self,
        mon: Monitor,
        *,
        warmup_steps: int,
        sync: Callable[[], None] | None,
        after_train: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.mon = mon
        self.warmup_steps = warmup_steps
        self.sync = sync
        self.after_train = after_train  # (model, tokenizer) -> None, run after the window closes
        self.step_times: list[float] = []
        self.losses: list[float] = []
        self.eval_metrics: dict[str, float] = {}
        self.eval_batches: list[list[EvalBatch]] = [[]]  # each rank's evaluation batches (this rank's until gathered)
        self._eval_hook: Any = None
        self._tokens_across_ranks = False  # the Trainer divides a batch's loss by every rank's tokens
        self.window: Window | None = None
        self.tokens_at_begin: int | None = None
        self.tokens_at_end: int | None = None
        self.max_steps = 0
        self.start_step = 0  # the step a resumed run starts from (0: from scratch)
        self._open_at = 0
        self._open = False
        self._last_edge = 0.0
        self._progress: Progress | None = None
        self._marks: set[int] = set()

    def _now(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.monotonic()

    def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001 - Trainer's signature
        self.max_steps = int(state.max_steps)
        # A resumed run measures only the steps it runs, each after its own warm-up (a new process).
        self.start_step = int(state.global_step)
        remaining = self.max_steps - self.start_step
        # Leave at least one step in the window, whatever warmup_measure_steps says.
        self.warmup_steps = min(self.warmup_steps, max(remaining - 1, 0))
        self._open_at = self.start_step + self.warmup_steps
        self._marks = boundary_steps(remaining - self.warmup_steps)
        self._progress = Progress(self.max_steps, "step", log, start=self.start_step)
        # the progress line's tokens/s: input tokens since this process began training (include_num_input_tokens_seen)
        self._progress_tokens0 = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        log.info("training %d optimizer steps (from step %d); measuring from step %d", self.max_steps,
                 self.start_step, self._open_at)

    def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
        if not self._open and state.global_step == self._open_at:
            self.mon.begin_window("train")  # syncs the device and reads the energy counter
            self._open = True
            self._last_edge = time.monotonic()
            self.tokens_at_begin = int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
        if self._open:
            now = self._now()
            self.step_times.append(now - self._last_edge)
            if len(self.step_times) - 1 in self._marks:  # a sub-window boundary (docs/noise.md)
                self.mon.mark()
            self._last_edge = time.monotonic()
        if self._progress is not None:
            last = f"loss {self.losses[-1]:.4f}" if self.losses else ""
            seen = int(getattr(state, "num_input_tokens_seen", 0) or 0) - getattr(self, "_progress_tokens0", 0)
            self._progress.update(state.global_step, items=max(seen, 0), extra=last)

    def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
        if logs and "loss" in logs and "eval_loss" not in logs:
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise RuntimeError(f"training diverged at step {state.global_step}: loss {loss}")
            self.losses.append(loss)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kw):  # noqa: ANN001
        if not self._open:
            raise RuntimeError("no optimizer step was measured (is the dataset empty?)")
        self.window = self.mon.end_window("train")
        self._open = False
        self.tokens_at_end = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        if self.after_train is not None:
            tokenizer = processing_class if processing_class is not None else kw.get("tokenizer")
            self.after_train(model, tokenizer)
        if model is not None:  # after exact match: its generation is no evaluation batch
            # Trainer._get_num_items_in_batch: with average_tokens_across_devices (the default) and more
            # than one process, num_items_in_batch counts every rank's label tokens of the step.
            self._tokens_across_ranks = (bool(getattr(args, "average_tokens_across_devices", False))
                                         and int(args.world_size) > 1)
            self._eval_hook = model.register_forward_hook(self._keep_eval_batch, with_kwargs=True)

    def _keep_eval_batch(self, module, args, kwargs, output):  # noqa: ANN001 - torch's hook signature
        """A forward pass in eval mode with labels: an evaluation batch, whose ``loss`` is the tensor
        the Trainer's prediction step averages into eval_loss. Kept as the batch's own mean token
        loss, its samples (the labels' rows) and tokens (heldout.batch_weights); heldout.py checks
        that the batches reproduce eval_loss before it gives an interval."""
        labels = kwargs.get("labels")
        loss = output.get("loss") if isinstance(output, dict) else None
        if module.training or labels is None or loss is None:
            return
        loss = float(loss.detach().float().mean())
        tokens = int(labels.ne(-100).sum())
        items = kwargs.get("num_items_in_batch")  # the model divided its summed loss by this
        if items is not None and self._tokens_across_ranks:
            items = int(items)
            batch = EvalBatch(loss * items / tokens if tokens else 0.0, int(labels.shape[0]), tokens, items)
        else:  # divided by its own tokens: the loss is its mean
            batch = EvalBatch(loss, int(labels.shape[0]), tokens, None)
        self.eval_batches[0].append(batch)

    def on_evaluate(self, args, state, control, metrics=None, **kw):  # noqa: ANN001
        if metrics:
            self.eval_metrics.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        if self._eval_hook is not None:  # every rank gets here: gather every rank's batches
            self._eval_hook.remove()
            self._eval_hook = None
            self.eval_batches = _every_rank(self.eval_batches)


def _every_rank(batches: list[list[EvalBatch]]) -> list[list[EvalBatch]]:
    """Every rank's evaluation batches, one list per rank in rank order (``batches`` holds this
    rank's alone); the same outside torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batches
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, [tuple(b) for b in batches[0]])
    return [[EvalBatch(*b) for b in part] for part in out]
