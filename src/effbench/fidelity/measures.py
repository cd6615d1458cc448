"""Fidelity figures from per-position next-token log-distributions (numpy only).

Inputs are arrays of natural-log probabilities, shape ``[positions, vocab]`` (windows
flattened), each row a full next-token distribution, and the tokens that actually follow
(``targets``, shape ``[positions]``). The baseline's distribution is the reference ``P``,
the compared precision's is ``Q``:

- perplexity = exp(mean over positions of −log Q(target));
- KL(P‖Q) per position = Σ_v P(v) (log P(v) − log Q(v)), reported as mean and p99 over positions;
- top-1 agreement = share of positions where argmax Q = argmax P (teacher forcing: both score
  the same held-out prefix, so one near-tie cannot derail the rest, unlike free-running greedy text).
"""

from __future__ import annotations

import math

import numpy as np

#: Percentile of the per-position KL reported beside the mean (the tail a mean hides).
KL_PERCENTILE = 99.0
#: A row of exp(log-probs) must sum to 1 within this: a truncated (top-k) distribution is refused.
MASS_TOLERANCE = 1e-3


def _check(logp: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(logp, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected [positions, vocab], got shape {a.shape}")
    mass = np.exp(a).sum(axis=1)
    worst = float(np.max(np.abs(mass - 1.0))) if len(mass) else 0.0
    if worst > MASS_TOLERANCE:
        raise ValueError(f"{name}: a distribution sums to {1 - worst:.4g} or {1 + worst:.4g}, not 1 "
                         "(a truncated top-k distribution cannot give KL)")
    return a


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities along the last axis, computed stably."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def perplexity(logp: np.ndarray, targets: np.ndarray) -> float:
    """exp(mean NLL of the tokens that follow)."""
    a = _check(logp, "logp")
    t = np.asarray(targets)
    if t.shape != (a.shape[0],):
        raise ValueError(f"targets: expected shape ({a.shape[0]},), got {t.shape}")
    return math.exp(-float(a[np.arange(len(t)), t].mean()))


def kl_per_position(base: np.ndarray, comp: np.ndarray) -> np.ndarray:
    """KL(base ‖ comp) at each position, nats (≥ 0)."""
    p, q = _check(base, "base"), _check(comp, "comp")
    if p.shape != q.shape:
        raise ValueError(f"base {p.shape} and comp {q.shape} differ in shape")
    # exp(-inf) * (-inf - x) is nan: a token the baseline rules out contributes 0.
    with np.errstate(invalid="ignore"):
        terms = np.where(np.isneginf(p), 0.0, np.exp(p) * (p - q))
    return np.maximum(terms.sum(axis=1), 0.0)  # rounding can leave -1e-17


def top1_agreement(base: np.ndarray, comp: np.ndarray) -> float:
    """Share of positions where both distributions put their mode on the same token."""
    p, q = np.asarray(base), np.asarray(comp)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"base {p.shape} and comp {q.shape}: expected equal [positions, vocab]")
    return float((p.argmax(axis=1) == q.argmax(axis=1)).mean())


def fidelity(base: np.ndarray, comp: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Every figure of a precision against its baseline (plus the baseline's own perplexity)."""
    kl = kl_per_position(base, comp)
    return {
        "ppl": perplexity(comp, targets),
        "ppl_baseline": perplexity(base, targets),
        "kl_mean": float(kl.mean()),
        "kl_p99": float(np.percentile(kl, KL_PERCENTILE)),
        "top1_agreement": top1_agreement(base, comp),
        "positions": int(len(kl)),
    }


#: What "faithful to the baseline" means: the project's thresholds (docs/fidelity.md has the
#: measurements they were chosen from). Every fidelity.json carries the verdict against them and
#: the values used (:func:`verdict`); ``recommend`` leaves a failing precision out by default.
THRESHOLDS = {"kl_mean_max": 0.05, "top1_agreement_min": 0.9}
#: The verdict of a precision's fidelity to its baseline; None (with a reason) when a figure is missing.
VERDICTS = ("pass", "fail", "baseline")
#: The figure each threshold bounds, its label, and whether the figure must be at most (else at least) the value.
_BOUNDS = {"kl_mean_max": ("kl_mean", "KL mean", True),
           "top1_agreement_min": ("top1_agreement", "top-1 agreement", False)}


def passes(figures: dict[str, float], thresholds: dict[str, float] = THRESHOLDS) -> bool:
    """Whether a precision is faithful: top-1 agreement and mean KL within the thresholds."""
    return (figures["top1_agreement"] >= thresholds["top1_agreement_min"]
            and figures["kl_mean"] <= thresholds["kl_mean_max"])


def _g(x: float, sig: int = 2) -> str:
    return f"{x:.{sig}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.{sig - 1}e}"


def _shown(v: float, limit: float) -> str:
    """``v`` to 2 significant digits, more where 2 would print it equal to a limit it differs from."""
    sig = 2
    while sig < 8 and v != limit and _g(v, sig) == _g(limit, sig):
        sig += 1
    return _g(v, sig)


def verdict(figures: dict[str, object], thresholds: dict[str, float] | None = None, *,
            baseline: bool = False) -> dict[str, object]:
    """The verdict of one precision's figures against ``thresholds`` (default :data:`THRESHOLDS`):

    - ``verdict``: ``pass`` | ``fail`` | ``baseline`` (the baseline precision itself), or None when
      a figure a threshold needs is missing, with ``verdict__missing`` saying which and why;
    - ``verdict_reason``: each threshold against its figure, e.g. "KL mean 0.099 > 0.05; top-1
      agreement 0.84 < 0.9" (a fail names only the thresholds missed);
    - ``thresholds``: the values used.
    """
    th = dict(THRESHOLDS if thresholds is None else thresholds)
    unknown = set(th) - set(_BOUNDS)
    if unknown:
        raise ValueError(f"unknown fidelity threshold(s) {sorted(unknown)}; known: {sorted(_BOUNDS)}")
    out: dict[str, object] = {"verdict": None, "verdict__missing": None, "verdict_reason": None, "thresholds": th}
    if baseline:
        return {**out, "verdict": "baseline", "verdict_reason": "the baseline itself"}
    missed, met, absent = [], [], []
    for key in (k for k in _BOUNDS if k in th):  # KL first: the sharper measure
        (fig, label, at_most), limit = _BOUNDS[key], th[key]
        v = figures.get(fig)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            why = figures.get(fig + "__missing")
            absent.append(f"{label} not measured" + (f" ({why})" if why else ""))
            continue
        ok = v <= limit if at_most else v >= limit
        op = ("≤" if ok else ">") if at_most else ("≥" if ok else "<")
        (met if ok else missed).append(f"{label} {_shown(float(v), limit)} {op} {limit:g}")
    if missed:  # a threshold missed fails the precision even when another figure is absent
        return {**out, "verdict": "fail", "verdict_reason": "; ".join(missed + absent)}
    if absent:
        return {**out, "verdict__missing": "; ".join(absent)}
    return {**out, "verdict": "pass", "verdict_reason": "; ".join(met)}
