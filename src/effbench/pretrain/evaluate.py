"""A pretrained cell's validation loss and perplexity, each with its 95 % interval.

:func:`evaluate` runs the model over the first ``eval_batches`` contiguous windows of the
validation split and keeps each batch's mean token NLL and its token count; :class:`Validation`
turns them into the record's figures (docs/noise.md):

- ``val_loss``: the mean token NLL over every evaluated token (Σ NLL / tokens), with the 95 %
  interval over the evaluation batches, each batch a replicate (``t_eval_batches``,
  :func:`effbench.measure.spread.eval_batches_interval`: the t interval of the batch means, t on
  k − 1 df, a short last batch weighted by its tokens);
- ``ppl`` = exp(val_loss), its interval exp of those ends (``exp(t_eval_batches)``: exp is
  increasing, so the coverage is the same).

One batch: the values without an interval. The interval is the noise of the finite validation
sample (which text was evaluated), not of training: another seed would train another model.

Pure apart from :func:`evaluate` (torch is imported there), so the driver's tests build the
figures from hand-made batch losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..measure import formulas, spread
from ..measure.figure import Figure

if TYPE_CHECKING:
    import torch

    from ..data.tokens import BatchSampler


@dataclass(frozen=True)
class Validation:
    """What the evaluation measured: per batch, its mean token NLL and its tokens."""

    batch_nll: list[float]
    batch_tokens: list[int]

    def __post_init__(self) -> None:
        if len(self.batch_nll) != len(self.batch_tokens):
            raise ValueError("one token count per batch")
        if not self.batch_nll:
            raise RuntimeError("the validation split is shorter than one batch")

    @property
    def mean_nll(self) -> float:
        return sum(x * n for x, n in zip(self.batch_nll, self.batch_tokens)) / sum(self.batch_tokens)

    def figures(self) -> dict[str, Figure]:
        """``val_loss`` and ``ppl`` for the record, with intervals when there are >= 2 batches."""
        if len(self.batch_nll) < 2:
            v = self.mean_nll
            return {"val_loss": Figure.of(v, "validation_mean_nll"),
                    "ppl": Figure.of(formulas.perplexity(v), "exp(val_loss)")}
        v, iv = spread.eval_batches_interval(self.batch_nll, [float(n) for n in self.batch_tokens])
        return {"val_loss": Figure.of(v, "validation_mean_nll", iv),
                "ppl": Figure.of(formulas.perplexity(v), "exp(val_loss)", spread.exp_interval(iv))}


def evaluate(model: "torch.nn.Module", sampler: "BatchSampler", t: dict[str, Any], seq: int,
             device: str) -> Validation:
    """Each of the first ``eval_batches`` batches' mean token NLL over contiguous validation windows.

    The caller's rank evaluates every batch itself (rank 0; under expert parallelism every rank
    runs the same batches, as the forward passes need them all): nothing is split across ranks,
    so the batches and their losses are the same whatever the layout."""
    import torch

    from .train import _forward_loss

    model.eval()
    nll: list[float] = []
    tokens: list[int] = []
    with torch.no_grad():
        for x, y in sampler.eval_batches(t["micro_batch_size"], seq, t["eval_batches"]):
            ids, labels = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            nll.append(float(_forward_loss(model, ids, labels)))
            tokens.append(int(ids.numel()))
    model.train()
    return Validation(nll, tokens)
