"""Scaling trends: each technique's metric against model size, with uncertainty, and crossings.

The fit is ordinary least squares in log space: log y = a + b·log N (a power law; where any
value is ≤ 0, y itself is fitted against log N), with a + c·log D added when some size was
trained on two or more token counts (one count per size would confound D's slope with N's). The
parameter covariance is s²(XᵀX)⁻¹ with s² the residual variance on n − p degrees of freedom;
intervals use Student's t on those degrees of freedom (:func:`effbench.measure.spread.t95`).
The confidence band is the fitted mean's 95 % interval,
the prediction band a new measurement's.

Fewer than :data:`MIN_SIZES` distinct sizes: no fit ("too few sizes to fit") and no line.

Two techniques' fits of one metric cross at log N* = (a₂ − a₁)/(b₁ − b₂). Its standard error is
the delta method's over both fits' covariances (independent fits), with t on the smaller of the
two residual degrees of freedom. When the slopes do not differ beyond their noise (|b₁ − b₂| ≤
t·SE) the crossing is not established and none is claimed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..aggregate.tables import format_value
from ..measure.spread import t95
from . import plots
from ..aggregate.frame import is_missing
from .axes import Axis, Objective, value
from .frames import ok_rows

MIN_SIZES = 3
TOO_FEW = "too few sizes to fit"
TOKENS_TERM = "fit with a training-tokens term, no line against size alone"


def _sig(x: float, n: int) -> str:
    return format_value(x, f"sig{n}")


@dataclass(frozen=True)
class Fit:
    coef: np.ndarray  # a, b (, c)
    cov: np.ndarray
    s2: float
    df: int
    n: int
    log_y: bool
    with_tokens: bool
    sizes: tuple[float, float]  # smallest and largest N fitted

    @property
    def slope(self) -> float:
        return float(self.coef[1])

    def slope_interval(self) -> tuple[float, float]:
        h = t95(self.df) * math.sqrt(self.cov[1, 1])
        return self.slope - h, self.slope + h

    def predict(self, sizes: Sequence[float], tokens: float | None = None) -> dict[str, np.ndarray]:
        """Mean, 95 % confidence band and 95 % prediction band at ``sizes`` (in y's units)."""
        x = np.log(np.asarray(sizes, dtype=float))
        cols = [np.ones_like(x), x] + ([np.full_like(x, math.log(tokens or 1.0))] if self.with_tokens else [])
        design = np.column_stack(cols)
        mean = design @ self.coef
        var = np.einsum("ij,jk,ik->i", design, self.cov, design)
        t = t95(self.df)
        out = {"mean": mean, "conf_low": mean - t * np.sqrt(var), "conf_high": mean + t * np.sqrt(var),
               "pred_low": mean - t * np.sqrt(var + self.s2), "pred_high": mean + t * np.sqrt(var + self.s2)}
        return {k: np.exp(v) for k, v in out.items()} if self.log_y else out


@dataclass(frozen=True)
class NoFit:
    reason: str
    n_sizes: int


def fit(sizes: Sequence[float], values: Sequence[float], tokens: Sequence[float] | None = None,
        log_y: bool | None = None) -> Fit | NoFit:
    """Fit ``values`` against ``sizes`` (and ``tokens`` where they vary); see the module doc."""
    n_arr = np.asarray(sizes, dtype=float)
    y = np.asarray(values, dtype=float)
    if n_arr.shape != y.shape:
        raise ValueError("sizes and values differ in length")
    n_sizes = len(set(n_arr.tolist()))
    if n_sizes < MIN_SIZES:
        return NoFit(f"{TOO_FEW} ({n_sizes} measured, {MIN_SIZES} needed)", n_sizes)
    if np.any(n_arr <= 0):
        raise ValueError("sizes must be positive")
    log_y = bool(np.all(y > 0)) if log_y is None else log_y
    yy = np.log(y) if log_y else y
    cols = [np.ones_like(n_arr), np.log(n_arr)]
    with_tokens = False
    if tokens is not None:
        d = np.log(np.asarray(tokens, dtype=float))
        trial = np.column_stack(cols + [d])
        # Tokens enter only when they vary within a size (else D's slope is N's under another
        # name, even where the design has full rank) and leave a degree of freedom.
        counts: dict[float, set[float]] = {}
        for n, t in zip(n_arr.tolist(), d.tolist()):
            counts.setdefault(n, set()).add(t)
        if any(len(c) > 1 for c in counts.values()) and np.linalg.matrix_rank(trial) == 3 and len(y) > 3:
            cols.append(d)
            with_tokens = True
    design = np.column_stack(cols)
    p = design.shape[1]
    if len(y) <= p:
        return NoFit(f"{TOO_FEW}: {len(y)} points leave no degree of freedom for the error", n_sizes)
    coef, *_ = np.linalg.lstsq(design, yy, rcond=None)
    resid = yy - design @ coef
    df = len(y) - p
    s2 = float(resid @ resid / df)
    cov = s2 * np.linalg.inv(design.T @ design)
    return Fit(coef, cov, s2, df, len(y), log_y, with_tokens, (float(n_arr.min()), float(n_arr.max())))


@dataclass(frozen=True)
class Crossing:
    """Where fit a's metric meets fit b's: N* with its 95 % interval, or why none is claimed."""

    size: float | None
    low: float | None
    high: float | None
    se_log: float | None
    note: str  # "within the measured sizes" | "extrapolated" | why there is none

    @property
    def established(self) -> bool:
        return self.size is not None


def crossing(a: Fit, b: Fit) -> Crossing:
    if a.with_tokens or b.with_tokens or a.log_y != b.log_y:
        return Crossing(None, None, None, None, "fits of different forms (tokens term or scale) do not cross simply")
    (a1, b1), (a2, b2) = a.coef[:2], b.coef[:2]
    ds = b1 - b2
    df = min(a.df, b.df)
    t = t95(df)
    se_ds = math.sqrt(a.cov[1, 1] + b.cov[1, 1])
    if abs(ds) <= t * se_ds:
        return Crossing(None, None, None, None,
                        f"slopes do not differ beyond noise ({_sig(b1, 3)} vs {_sig(b2, 3)}, difference "
                        f"{_sig(ds, 2)} ± {_sig(t * se_ds, 2)}): no crossing established")
    x = (a2 - a1) / ds
    # Gradient of x = (a2 − a1) / (b1 − b2) in (a1, b1) and (a2, b2); the fits are independent.
    g_a = np.array([-1.0 / ds, -x / ds])
    g_b = np.array([1.0 / ds, x / ds])
    var = g_a @ a.cov[:2, :2] @ g_a + g_b @ b.cov[:2, :2] @ g_b
    se = math.sqrt(var)
    lo, hi = max(a.sizes[0], b.sizes[0]), min(a.sizes[1], b.sizes[1])
    note = "within the measured sizes" if lo <= math.exp(x) <= hi else "extrapolated beyond the measured sizes"
    return Crossing(math.exp(x), math.exp(x - t * se), math.exp(x + t * se), se, note)


# --- over the frames ---------------------------------------------------------------------------

# Fits hold everything but size fixed: fine-tuning per task, serving per load point and per
# pretraining variant of the served model (attention variants differ a little in size, and a
# fit across them would read an architecture's effect as a size trend).
SCALING_GROUP = {"pretrain": (), "finetune": ("task",), "inference": ("load_point", "pretrain_technique")}


@dataclass
class Series:
    """One technique's points of one metric (within one group, e.g. one task) and its fit."""

    axis: Axis
    objective: Objective
    group: str  # "task = t", or '' for none
    group_key: tuple[str, ...]  # the group's values
    technique: str
    sizes: list[float]
    values: list[float]
    cells: list[str]
    result: Fit | NoFit


def _tokens(row: pd.Series) -> float | None:
    """Training tokens of a pretraining cell (steps × global batch × sequence), when recorded."""
    import json

    try:
        t = json.loads(row.get("settings_json") or "{}").get("training", {})
        return float(t["train_steps"] * t["global_batch_size"] * row["seq_length"])
    except (KeyError, TypeError, ValueError):
        return None


def axis_series(df: pd.DataFrame, axis: Axis) -> list[Series]:
    ok = ok_rows(df)
    if not len(ok) or axis.candidate not in ok:
        return []
    keys = [k for k in SCALING_GROUP.get(axis.stage, ()) if k in ok]
    ok = ok.assign(**{k: ["n/a" if is_missing(v) else str(v) for v in ok[k]] for k in keys})
    out = []
    for o in axis.objectives:
        have = ok[[value(r, o.column) is not None and value(r, axis.size) is not None for _, r in ok.iterrows()]]
        if not len(have):
            continue
        log_y = bool((have[o.column].astype(float) > 0).all())  # one scale per metric, so fits can cross
        grouped = have.groupby([*keys, axis.candidate] if keys else axis.candidate, sort=False)
        for key, g in grouped:
            key = key if isinstance(key, tuple) else (key,)
            group = ", ".join(f"{k} = {v}" for k, v in zip(keys, key[:-1]))
            tokens = [_tokens(r) for _, r in g.iterrows()] if axis.stage == "pretrain" else None
            tokens = tokens if tokens and all(t is not None for t in tokens) else None
            sizes, vals = [float(v) for v in g[axis.size]], [float(v) for v in g[o.column]]
            out.append(Series(axis, o, group, tuple(str(v) for v in key[:-1]), str(key[-1]), sizes, vals,
                              [str(c) for c in g["cell"]],
                              fit(sizes, vals, tokens, log_y)))
    return out


def crossings(series: list[Series]) -> list[dict[str, Any]]:
    """Every pair of fitted techniques of one metric and group, with their crossing."""
    fitted = [s for s in series if isinstance(s.result, Fit)]
    out = []
    for i, a in enumerate(fitted):
        for b in fitted[i + 1:]:
            if (a.axis.name, a.objective.column, a.group) != (b.axis.name, b.objective.column, b.group):
                continue
            c = crossing(a.result, b.result)  # type: ignore[arg-type]
            out.append({"axis": a.axis.name, "metric": a.objective.column, "label": a.objective.label,
                        "group": a.group, "a": a.technique, "b": b.technique, "size": c.size, "low": c.low,
                        "high": c.high, "note": c.note})
    return out


def render(series: list[Series], cross: list[dict[str, Any]]) -> str:
    lines = ["# Scaling with model size", "",
             "Each technique's metric against model size N (total parameters): log y = a + b·log N by least "
             "squares (y itself where a value is ≤ 0), 95 % t intervals on the residual degrees of freedom. "
             f"Fewer than {MIN_SIZES} sizes: no fit, no line. Method: docs/decision.md.", ""]
    if not series:
        return "\n".join(lines + ["No measured figures with a model size.", ""])
    lines += ["| Axis | Group | Technique | Sizes | Fits |", "|---|---|---|---:|---|"]
    keyed: dict[tuple[str, str, str], list[Series]] = {}
    for s in series:
        keyed.setdefault((s.axis.name, s.group, s.technique), []).append(s)
    for (axis, group, technique), ss in keyed.items():
        reasons = {s.result.reason for s in ss if isinstance(s.result, NoFit)}
        if len(reasons) == 1 and all(isinstance(s.result, NoFit) for s in ss):
            text = f"{reasons.pop()}: none of {', '.join(s.objective.label for s in ss)}"
        else:
            text = "<br>".join(f"{s.objective.label}: {_fit_text(s.result)}" for s in ss)
        lines.append(f"| {axis} | {group or '–'} | {technique} | {max(len(set(s.sizes)) for s in ss)} | {text} |")
    lines += ["", "## Crossings", ""]
    if not cross:
        lines.append("None: no two techniques of one metric have fits (too few sizes), so no crossing is claimed.")
    else:
        lines += ["| Axis | Group | Metric | Techniques | Crossing N | 95 % interval | Note |",
                  "|---|---|---|---|---:|---|---|"]
        for c in cross:
            where = "–" if c["size"] is None else _params(c["size"])
            iv = "–" if c["low"] is None else f"{_params(c['low'])} – {_params(c['high'])}"
            lines.append(f"| {c['axis']} | {c['group'] or '–'} | {c['label']} | {c['a']} / {c['b']} | {where} | "
                         f"{iv} | {c['note']} |")
    return "\n".join(lines) + "\n"


def _fit_text(r: Fit | NoFit) -> str:
    if isinstance(r, NoFit):
        return r.reason
    lo, hi = r.slope_interval()
    return (f"{'log y' if r.log_y else 'y'} = {_sig(r.coef[0], 4)} + {_sig(r.slope, 3)}·log N"
            + (f" + {_sig(r.coef[2], 3)}·log D" if r.with_tokens else "")
            + f"; slope 95 % [{_sig(lo, 3)}, {_sig(hi, 3)}], {r.df} df")


def _params(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def plot_metric(series: list[Series], out: Path) -> dict[str, Any] | None:
    """One metric of one axis and group: every technique's points; its fit, confidence band
    (shaded) and prediction band (dotted) only where it has one against N alone (a fit with a
    tokens term has no single line against N: points only, the table gives it). Drawn where some
    technique has a fit (too few sizes everywhere: the table says so and nothing is drawn)."""
    if not any(isinstance(s.result, Fit) for s in series):
        return None
    import matplotlib

    s0 = series[0]
    fig, (ax,) = plots.new_figure(1)
    palette = matplotlib.colormaps["tab10"]
    lined = [isinstance(s.result, Fit) and not s.result.with_tokens for s in series]
    for i, s in enumerate(series):
        color = palette(i % 10)
        note = "" if lined[i] else f" ({TOKENS_TERM})" if isinstance(s.result, Fit) else f" ({TOO_FEW})"
        ax.scatter(s.sizes, s.values, color=color, zorder=3, label=s.technique + note)
        if lined[i]:
            grid = np.geomspace(s.result.sizes[0], s.result.sizes[1], 50)
            p = s.result.predict(grid)
            ax.plot(grid, p["mean"], color=color)
            ax.fill_between(grid, p["conf_low"], p["conf_high"], color=color, alpha=0.2)
            ax.plot(grid, p["pred_low"], color=color, linestyle=":", linewidth=0.8)
            ax.plot(grid, p["pred_high"], color=color, linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    positive = all(v > 0 for s in series for v in s.values)
    if positive and all(isinstance(s.result, NoFit) or s.result.log_y for s in series):
        ax.set_yscale("log")
    ax.set_xlabel("Model size N (parameters)")
    ax.set_ylabel(s0.objective.label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    title = f"{s0.axis.title}: {s0.objective.label}" + (f" ({s0.group})" if s0.group else "")
    ax.set_title(title, fontsize=9)
    name = plots.slug("scaling", s0.axis.name, s0.objective.column, *s0.group_key)
    rel = plots.save(fig, name, out)
    fitted = [s.technique for s, line in zip(series, lined) if line]
    with_tokens = [s.technique for s, line in zip(series, lined) if not line and isinstance(s.result, Fit)]
    unfitted = [s.technique for s in series if isinstance(s.result, NoFit)]
    caption = (f"{s0.objective.label} against model size"
               + (f"; fitted: {', '.join(fitted)} (line, 95 % confidence band shaded, 95 % prediction band dotted)"
                  if fitted else "")
               + (f"; {TOKENS_TERM}, points only (fit in the table): {', '.join(with_tokens)}" if with_tokens else "")
               + (f"; {TOO_FEW}, points only: {', '.join(unfitted)}" if unfitted else "") + ".")
    return {"name": name, "title": f"Scaling — {title}", **rel, "caption": caption}


def plot_all(series: list[Series], out: Path) -> list[dict[str, Any]]:
    keyed: dict[tuple[str, str, str], list[Series]] = {}
    for s in series:
        keyed.setdefault((s.axis.name, s.objective.column, s.group), []).append(s)
    return [p for group in keyed.values() if (p := plot_metric(group, out))]
