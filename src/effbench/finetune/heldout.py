"""The fine-tuning record's held-out loss (``val_loss``) with its 95 % interval. Pure: no torch.

The value is LlamaFactory's ``eval_loss``: the Trainer's final evaluation over the held-out split.
The callback (:class:`~effbench.finetune.callback.MeasureCallback`) keeps, for every evaluation
batch of every rank, the loss the model returned to the Trainer in that evaluation (a forward hook,
no second pass) as an :class:`EvalBatch`. Each batch is a replicate: the interval is the t
interval over the batches (``t_eval_batches``, :func:`effbench.measure.spread.eval_batches_interval`,
t on k − 1 df) of their mean token losses, weighted as eval_loss weights them
(:func:`batch_weights`), centred on ``eval_loss``.

No interval when fewer than two batches were seen, or when the batches seen do not reproduce
``eval_loss`` (e.g. a data-parallel evaluation whose last batches were padded with repeated
samples, which the Trainer drops and the hook cannot tell): the interval would not be that
figure's, so none is given and the log says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from ..measure import spread
from ..measure.figure import Figure
from ..measure.spread import Interval

log = logging.getLogger("effbench.finetune")
SOURCE = "llamafactory_eval_loss"
AGREE_REL = 1e-4  # the Trainer averages in float32: the batches reproduce eval_loss far better than this


class EvalBatch(NamedTuple):
    """One rank's evaluation batch."""

    loss: float  # its mean loss over its own label tokens (Σ NLL / tokens)
    samples: int
    tokens: int  # its label tokens, counted as the Trainer counts them (labels != -100)
    step_tokens: int | None  # every rank's label tokens in this step, when the Trainer divided by them


def batch_weights(per_rank: Sequence[Sequence[EvalBatch]]) -> list[tuple[float, float]]:
    """(mean loss, weight) of every batch, weighted so that Σ w·loss / Σ w is the Trainer's eval_loss.

    The Trainer's evaluation loop repeats each rank's batch loss ``eval_batch_size`` times (the
    configured size, not the batch's own: a short last batch counts as a full one) and averages
    the repeats, so eval_loss is the plain mean of the batch losses. Within one process, or
    without ``average_tokens_across_devices``, that loss is the batch's own mean token loss: every
    batch weighs the same. With it, the loss of rank r in step s is Σ NLL_rs × world / (every rank's
    tokens G_s), so rank r's batch weighs tokens_rs / G_s (each step as the token mean of its ranks).
    Weighting by the batch's samples instead (as a first version did) missed eval_loss whenever the
    last batch was short: on the default run by up to 1.4 %, so no interval was ever given."""
    out = []
    for batches in per_rank:
        for b in batches:
            if b.step_tokens is None:
                out.append((b.loss, 1.0))
            elif b.tokens > 0:  # a batch without label tokens adds nothing to either sum
                out.append((b.loss, b.tokens / b.step_tokens))
    return out


def held_out_loss(eval_loss: float | None, per_rank: Sequence[Sequence[EvalBatch]]) -> Figure:
    """``val_loss``: LlamaFactory's eval_loss and its interval over every rank's evaluation batches."""
    if eval_loss is None:
        return Figure.missing("the task has no held-out split (tasks.<name>.val_size or an eval file)")
    weighted = batch_weights(per_rank)
    if len(weighted) < 2:
        return Figure.of(eval_loss, SOURCE)
    mean, iv = spread.eval_batches_interval([x for x, _ in weighted], [w for _, w in weighted])
    if abs(mean - eval_loss) > AGREE_REL * max(1.0, abs(eval_loss)):
        log.warning("held-out loss: the %d evaluation batches seen average %.6g, not eval_loss %.6g; no interval",
                    len(weighted), mean, eval_loss)
        return Figure.of(eval_loss, SOURCE)
    half = iv.high - mean  # the uncut half-width (the low end may be cut at 0)
    return Figure.of(eval_loss, SOURCE, Interval(max(eval_loss - half, 0.0), eval_loss + half, iv.n, iv.method))
