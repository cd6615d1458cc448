"""Open-loop serving (load_mode ``rate``): the throughput-latency curves over each rate sweep.

A rate sweep is a load point ``<name>`` at its configured rate and the points ``<name>@<rate>`` it
expands into, all with ``load_mode`` rate. For each sweep, one line per model × precision:

- ``inference_rate_sweep_ttft``: TTFT (p90; the mean where a point has no p90 for every point of
  the plot) against the achieved request throughput (completed requests/s; the offered rate when
  some point has no achieved throughput), the curve practitioners read the knee of;
- ``inference_rate_sweep_goodput``: goodput (requests/s that met both SLOs) against the same x.

Drawn only where there are rate points; otherwise the manifest lists the plot as skipped with
why. A point lacking the y figure is left out of its plot and listed with its reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .frame import is_missing
from .plotpoints import legend_outside, place_labels, point_text, save_points
from .tables import FALLBACK_MARK

RATE = "rate"
TTFT_PLOT, GOODPUT_PLOT = "inference_rate_sweep_ttft", "inference_rate_sweep_goodput"
NO_RATE_POINTS = "no ok inference run at an open-loop (rate) load point"


def sweep_name(load_point: Any) -> str:
    """The sweep a load point belongs to: ``poisson@4.5`` → ``poisson``; a base point is its own."""
    return str(load_point).split("@", 1)[0]


def rate_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ok rows measured at an open-loop load point, with their sweep's name (``sweep``)."""
    if not len(df) or "load_mode" not in df.columns:
        return df.iloc[0:0]
    ok = df[(df["status"] == "ok") & (df["load_mode"] == RATE)].copy()
    ok["sweep"] = [sweep_name(v) for v in ok["load_point"]]
    return ok


def _have(df: pd.DataFrame, col: str) -> list[bool]:
    return [not is_missing(v) for v in df[col]] if col in df.columns else [False] * len(df)


def _x_column(rows: pd.DataFrame) -> tuple[str, str]:
    if all(_have(rows, "request_throughput_rps")):
        return "request_throughput_rps", "Achieved request throughput (completed requests/s)"
    return "request_rate_rps", "Offered request rate (requests/s; achieved throughput not measured at every point)"


def _ttft_column(rows: pd.DataFrame) -> tuple[str, str]:
    if all(_have(rows, "ttft_s_p90")):
        return "ttft_s_p90", "TTFT p90 (s), lower is better"
    return "ttft_s_mean", "TTFT mean (s; p90 not measured at every point), lower is better"


def _describe(r: pd.Series) -> str:
    """A point's hover heading: its cell, the offered load and the SLOs it was judged against."""
    parts = [str(r["cell"])]
    rate = r.get("request_rate_rps")
    if not is_missing(rate):
        arrivals = r.get("arrivals")
        parts.append(f"offered {float(rate):g} req/s" + ("" if is_missing(arrivals) else f" ({arrivals})"))
    slo = [f"{k} {float(r[c]):g} ms" for k, c in (("TTFT", "slo_ttft_ms"), ("TPOT", "slo_tpot_ms"))
           if not is_missing(r.get(c))]
    parts.append("SLO " + ", ".join(slo) if slo else "no SLO")
    if not is_missing(r.get("engine_fallback")):
        parts.append(f"[{FALLBACK_MARK}] served by {r.get('engine')}: {r['engine_fallback']}")
    return "; ".join(parts)


def _interval_bars(ax: Any, g: pd.DataFrame, x: str, y: str, color: str) -> None:
    """The 95 % interval of each point's x and y, where its record has one (docs/noise.md)."""
    for _, r in g.iterrows():
        err = {}
        for axis, col in (("xerr", x), ("yerr", y)):
            lo, hi = r.get(col + "__ci_low"), r.get(col + "__ci_high")
            if not (is_missing(lo) or is_missing(hi)):
                v = float(r[col])
                err[axis] = [[max(v - float(lo), 0.0)], [max(float(hi) - v, 0.0)]]
        if err:
            ax.errorbar([float(r[x])], [float(r[y])], fmt="none", ecolor=color, alpha=0.6, capsize=2, **err)


def _sweep_plot(rows: pd.DataFrame, y: str, ylabel: str, name: str, title: str, out: Path) -> dict[str, Any]:
    from .serving import _new_axes, _save_plot

    x, xlabel = _x_column(rows)
    have = [a and b for a, b in zip(_have(rows, x), _have(rows, y))]
    left_out = []
    for (_, r), h in zip(rows.iterrows(), have):
        if not h:
            col = y if is_missing(r.get(y)) else x
            why = r.get(col + "__missing")
            left_out.append(f"{r['cell']} ({col} missing: {'no reason recorded' if is_missing(why) else why})")
    pts = rows[have]
    fig, ax = _new_axes()
    xs: list[float] = []
    ys: list[float] = []
    labels: list[str] = []
    texts: list[str] = []
    several = pts["sweep"].nunique() > 1
    hover = (("Req/s achieved", "request_throughput_rps", "sig3"), ("Goodput (req/s)", "goodput_rps", "sig3"),
             ("Goodput share", "goodput_frac", "sig3"), ("TTFT p90 (s)", "ttft_s_p90", "sig3"),
             ("TPOT p90 (s)", "tpot_s_p90", "sig3"))
    for (model, precision, sweep), g in pts.groupby(["model", "precision", "sweep"], sort=True):
        g = g.sort_values(x)
        mark = f" [{FALLBACK_MARK}]" if any(not is_missing(r.get("engine_fallback")) for _, r in g.iterrows()) else ""
        line, = ax.plot(g[x].astype(float), g[y].astype(float), marker="o",
                        label=f"{model} {precision}" + (f" ({sweep})" if several else "") + mark)
        _interval_bars(ax, g, x, y, line.get_color())
        for _, r in g.iterrows():
            xs.append(float(r[x]))
            ys.append(float(r[y]))
            rate = r.get("request_rate_rps")
            labels.append(f"{float(rate):g}" if not is_missing(rate) else str(r["load_point"]))
            shown = tuple(h for h in hover if h[1] not in (x, y))
            axes = ((ylabel.split(",")[0], y, "sig4"), (xlabel.split(" (")[0], x, "sig4"), *shown)
            texts.append(point_text(_describe(r), r, axes))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    legend_outside(ax, fontsize=7)  # before the labels: the legend changes the layout
    place_labels(fig, ax, xs, ys, labels, fontsize=7)
    rel = _save_plot(fig, ax, name, f"inference: {title}", out)
    return {"name": name, "x": x, "y": y, "title": title[:1].upper() + title[1:], **rel, "left_out": left_out,
            "points": save_points(fig, ax, 150, xs, ys, texts)}


def rate_sweep_plots(df: pd.DataFrame, out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sweep plots (module doc) as manifest entries: (drawn, skipped with why). Labels on the
    points are the offered rates (req/s)."""
    rows = rate_rows(df)
    y_ttft, ttft_label = _ttft_column(rows) if len(rows) else ("ttft_s_p90", "")
    wanted = ((TTFT_PLOT, y_ttft, ttft_label, "TTFT vs request throughput (rate sweeps)"),
              (GOODPUT_PLOT, "goodput_rps", "Goodput, requests/s meeting both SLOs, higher is better",
               "goodput vs request throughput (rate sweeps)"))
    drawn, skipped = [], []
    for name, y, ylabel, title in wanted:
        base = {"name": name, "kind": "plot", "title": title[:1].upper() + title[1:]}
        if not len(rows):
            skipped.append({**base, "reason": NO_RATE_POINTS})
            continue
        if not any(_have(rows, y)):
            reasons = sorted({str(v) for v in rows.get(y + "__missing", pd.Series(dtype=object)) if not is_missing(v)})
            skipped.append({**base, "reason": f"{y} not measured at any rate point: "
                                              + ("; ".join(reasons) or "no reason recorded")})
            continue
        drawn.append(_sweep_plot(rows, y, ylabel, name, title, out))
    return drawn, skipped
