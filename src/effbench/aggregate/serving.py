"""Aggregate the quantization/inference axis: the paper's Table 9, per-task accuracy, latency
at every load point, Pareto plots, throughput-latency curves and, over each open-loop rate sweep,
TTFT and goodput against request throughput (:mod:`.open_loop`).

Accuracy (lm-evaluation-harness scores) and sizes (quantize records) are joined onto the
serving records here, so a re-scored model does not re-measure its serving latency.
MCR follows the paper: (Size_orig / Size_comp) × (Perf_comp / Perf_orig) against the
baseline precision, once with nominal bits and once with measured on-disk bytes. The baseline's
own MCR is exactly 1 and carries no interval (one accuracy, not two independent ones). Perf
averages the tasks measurable at the model's baseline precision, and each precision is compared
with the baseline on the same items (paired: McNemar, the paired delta method); both in
:mod:`.quality`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_path, write_text
from ..fidelity.table import NO_RUN as FIDELITY_NO_RUN
from ..fidelity.table import TITLE as FIDELITY_TITLE
from ..fidelity.table import attach_verdict, load_fidelity, write_fidelity_table
from ..measure import formulas
from .frame import is_missing, order_rows
from .open_loop import rate_sweep_plots
from .quality import BASELINE_MCR, perf_tasks, quality_row  # noqa: F401  (BASELINE_MCR: re-exported)
from .specs import INFERENCE, INFERENCE_LATENCY, QUANTIZE, StageSpec
from .stage import aggregate_stage, manifest_path
from .plotpoints import legend_outside, place_labels, point_text, save_points
from .tables import FALLBACK_MARK, write_tables

NO_SCORES = "no evaluation scores for this model and precision (eval stage not configured)"


def load_scores(paths: Iterable[Path | str]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for p in paths:
        s = json.loads(Path(p).read_text())
        out[(s["model"], s["precision"])] = s
    return out


def _sizes(quant: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    ok = quant[quant["status"] == "ok"] if len(quant) else quant
    return {(r["model"], r["precision"]): {"disk_bytes": r["disk_bytes"], "weight_bits": r["weight_bits"],
                                           "quant_method": r["quant_method"]} for _, r in ok.iterrows()}


def mcr_pair(base: dict[str, Any], comp: dict[str, Any], acc_base: float, acc_comp: float) -> tuple[float, float]:
    """(MCR with nominal bits, MCR with on-disk bytes)."""
    return (formulas.mcr(base["weight_bits"], comp["weight_bits"], acc_comp, acc_base),
            formulas.mcr(base["disk_bytes"], comp["disk_bytes"], acc_comp, acc_base))


# Columns the quality join adds (effbench.aggregate.quality.quality_row), and those of them that are numbers.
QUALITY_COLUMNS = (
    "accuracy", "accuracy__source", "accuracy__missing", "accuracy_tasks_json", "perf_tasks", "perf_tasks__missing",
    "quality_vs_baseline", "quality_vs_baseline__missing", "quality_p", "quality_p__missing", "quality_test",
    "quality_test__missing", "accuracy_drop", "accuracy_drop__source", "accuracy_drop__missing",
    "mcr_nominal", "mcr_nominal__source", "mcr_nominal__missing", "mcr_disk", "mcr_disk__source", "mcr_disk__missing",
    *(f"{m}__ci_{x}" for m in ("accuracy", "accuracy_drop", "mcr_nominal", "mcr_disk")
      for x in ("low", "high", "n", "method")))
NUMERIC = ("accuracy", "quality_p", "accuracy_drop", "mcr_nominal", "mcr_disk", "disk_bytes", "weight_bits",
           *(f"{m}__ci_{x}" for m in ("accuracy", "accuracy_drop", "mcr_nominal", "mcr_disk")
             for x in ("low", "high", "n")))


def attach_quality(df: pd.DataFrame, quant: pd.DataFrame, scores: dict[tuple[str, str], dict[str, Any]],
                   baseline: str) -> pd.DataFrame:
    """Perf (the tasks measurable at the baseline), its tasks, sizes, the paired comparison with the
    baseline and both MCRs for each (model, precision) row (effbench.aggregate.quality)."""
    df = df.copy()
    sizes = _sizes(quant)
    cols: dict[str, list[Any]] = {k: [] for k in (*QUALITY_COLUMNS, "disk_bytes", "weight_bits", "quant_method")}
    for _, r in df.iterrows():
        key, base_key = (r["model"], r["precision"]), (r["model"], baseline)
        size = sizes.get(key, {})
        q = quality_row(r["model"], r["precision"], baseline, scores.get(key), scores.get(base_key), size,
                        sizes.get(base_key), NO_SCORES)
        for k in QUALITY_COLUMNS:
            cols[k].append(q.get(k))
        for k in ("disk_bytes", "weight_bits", "quant_method"):
            v = size.get(k, r.get(k))
            cols[k].append(None if is_missing(v) else v)
    for k, v in cols.items():
        df[k] = pd.Series(v, index=df.index, dtype=object)
    for k in NUMERIC:
        df[k] = pd.to_numeric(df[k])
    return df


TASK_COLUMNS = ["model", "precision", "task", "metric", "value", "stderr", "n", "chance", "control",
                "control_stderr", "swapped", "swapped_stderr", "z_chance", "z_control", "z_swapped", "measurable",
                "in_perf", "backend"]


def _task_rows(scores: dict[tuple[str, str], dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    rows = []
    for (m, p), s in scores.items():
        used = perf_tasks(s, scores.get((m, baseline)), baseline, p).tasks
        for t, v in s["tasks"].items():
            c, sw = v.get("control") or {}, v.get("swapped") or {}
            rows.append({"model": m, "precision": p, "task": t, "metric": v["metric"], "value": v["value"],
                         "stderr": v["stderr"], "n": v["n"], "chance": v.get("chance"), "control": c.get("value"),
                         "control_stderr": c.get("stderr"), "swapped": sw.get("value"),
                         "swapped_stderr": sw.get("stderr"), "z_chance": v.get("z_chance"),
                         "z_control": v.get("z_control"), "z_swapped": v.get("z_swapped"),
                         "measurable": v.get("measurable"), "in_perf": t in used, "backend": s["backend"]})
    return rows


def _pm(v: Any, se: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def _z(v: Any) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def task_table(scores: dict[tuple[str, str], dict[str, Any]], spec: StageSpec, out: Path,
               baseline: str | None = None) -> dict[str, str]:
    """Per-task accuracy with chance, the two controls (question-blind, swapped subject), the z-scores
    against each, whether the task is measurable and whether it is one of the model's Perf tasks; rows model × precision × task:
    tables/inference_tasks.{csv,md}."""
    baseline = baseline or ""
    long = _task_rows(scores, baseline)
    rel = {"csv": "tables/inference_tasks.csv", "md": "tables/inference_tasks.md"}
    frame = pd.DataFrame(long, columns=TASK_COLUMNS)
    with atomic_path(out / rel["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    lines = ["**Accuracy per task** (lm-evaluation-harness; score ± standard error, against chance and the "
             "task's two controls, question-blind and swapped subject; Perf = the mean over the tasks marked "
             "*in Perf*)", ""]
    if not len(frame):
        write_text(out / rel["md"], "\n".join(lines + ["No scores.", ""]))
        return rel
    lines.append("| Model | Precision | Task | Score ± SE | n | Chance | Blind ± SE | Swapped ± SE | z chance "
                 "| z blind | z swapped | Measurable | In Perf |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    keys = pd.DataFrame([{"model": m, "precision": p, "params_total": 0, "cell": f"{m}/{p}"} for (m, p) in scores])
    by_key = {(r["model"], r["precision"]): [] for r in long}
    for r in long:
        by_key[(r["model"], r["precision"])].append(r)
    for _, k in order_rows(keys, spec).iterrows():
        for r in by_key.get((k["model"], k["precision"]), []):
            measurable = {True: "yes", False: "no"}.get(r["measurable"], "n/a (no control)")
            lines.append(f"| {r['model']} | {r['precision']} | {r['task']} | {_pm(r['value'], r['stderr'], 4)} "
                         f"| {r['n']} | {_pm(r['chance'], None)} | {_pm(r['control'], r['control_stderr'])} "
                         f"| {_pm(r['swapped'], r['swapped_stderr'])} | {_z(r['z_chance'])} | {_z(r['z_control'])} "
                         f"| {_z(r['z_swapped'])} | {measurable} "
                         f"| {'yes' if r['in_perf'] else 'no'} |")
    metrics = sorted({f"{t}: {v['metric']} (n = {v['n']})" for s in scores.values() for t, v in s["tasks"].items()})
    lines += ["", "Notes:", "",
              "- Measurable: z chance > 3, z blind > 3 and z swapped > 3, each with the null hypothesis' standard "
              "error: against chance, and the paired per-item difference from each control on the same items "
              "(blind: the prompt without question or passage; swapped: the question about another subject whose "
              "answer is none of the choices, so the fact is gone), docs/quality.md. n/a: no difference at all.",
              f"- In Perf: the tasks measurable at the baseline precision ({baseline or 'none given'}), the same for "
              "every precision of a model, so a comparison holds the same tasks on both sides; a task without a "
              "control (no verdict) is kept unchecked.",
              "- Metrics: " + "; ".join(metrics) + "."]
    write_text(out / rel["md"], "\n".join(lines) + "\n")
    return rel


def _ok_with(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """The ok rows where every one of ``cols`` was measured."""
    ok = df[(df["status"] == "ok")] if len(df) else df
    return ok[[all(not is_missing(r.get(c)) for c in cols) for _, r in ok.iterrows()]] if len(ok) else ok


def _new_axes():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "effbench"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save_plot(fig: Any, ax: Any, name: str, title: str, out: Path) -> dict[str, str]:
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    legend_outside(ax, fontsize=7)  # beside the axes: a legend inside hid points
    rel = {ext: f"plots/{name}.{ext}" for ext in ("png", "svg")}
    with atomic_path(out / rel["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
    with atomic_path(out / rel["svg"]) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    return rel


def _fallback(r: Any) -> bool:
    return not is_missing(r.get("engine_fallback"))


def _lines_plot(ok: pd.DataFrame, by: list[str], x: str, y: str, point_label: str, name: str, title: str,
                xlabel: str, ylabel: str, out: Path, log_x: bool = False,
                hover: tuple[tuple[str, str, str], ...] = ()) -> dict[str, Any]:
    """One line per ``by`` group of ``y`` against ``x``, each point labelled by ``point_label``; a
    point another engine than the configured one served carries the tables' [F], and so does its
    line's legend entry. Its hover points go in the entry (effbench.aggregate.plotpoints), with the
    ``hover`` figures ((header, column, format)) beside the two axes'."""
    fig, ax = _new_axes()
    xs: list[float] = []
    ys: list[float] = []
    labels: list[str] = []
    texts: list[str] = []
    for key, g in ok.groupby(by, sort=True):
        g = g.sort_values(x)
        mark = f" [{FALLBACK_MARK}]" if any(_fallback(r) for _, r in g.iterrows()) else ""
        ax.plot(g[x], g[y], marker="o", label=" ".join(str(k) for k in key) + mark)
        for _, r in g.iterrows():
            label = str(r[point_label]) + (f" [{FALLBACK_MARK}]" if _fallback(r) else "")
            xs.append(float(r[x]))
            ys.append(float(r[y]))
            labels.append(label)
            where = f"{r['cell']}" + (f" [{FALLBACK_MARK}] served by {r.get('engine')}: {r['engine_fallback']}"
                                      if _fallback(r) else "")
            texts.append(point_text(where, r, ((ylabel.split(",")[0], y, "sig4"), (xlabel.split(",")[0], x, "sig4"),
                                               *hover)))
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    legend_outside(ax, fontsize=7)  # before the labels are placed: the legend changes the layout
    place_labels(fig, ax, xs, ys, labels, fontsize=7)
    rel = _save_plot(fig, ax, name, f"inference: {title}", out)
    return {"name": name, "x": x, "y": y, "title": title[:1].upper() + title[1:], **rel, "left_out": [],
            "points": save_points(fig, ax, 150, xs, ys, texts)}


def throughput_latency_plot(df: pd.DataFrame, out: Path) -> dict[str, Any] | None:
    """IT against mean E2E latency over the load points, one line per model × precision."""
    ok = _ok_with(df, "it_tokens_per_s", "e2e_s_mean")
    if not len(ok):
        return None
    return _lines_plot(ok, ["model", "precision"], "e2e_s_mean", "it_tokens_per_s", "load_point",
                       "inference_throughput_vs_latency", "throughput vs latency (load points)",
                       "Mean end-to-end latency per request (s), lower is better",
                       "IT, generated tokens/s, higher is better", out)


def fidelity_table(quant: pd.DataFrame, out: Path, fidelity: Mapping[tuple[str, str], dict[str, Any]]
                   ) -> dict[str, str]:
    """The fidelity table (effbench.fidelity) for every model × precision quantized."""
    keys = pd.DataFrame([{"model": m, "precision": p, "params_total": 0, "cell": f"{m}/{p}"}
                         for m, p in dict.fromkeys(zip(quant.get("model", []), quant.get("precision", [])))])
    ordered = order_rows(keys, INFERENCE) if len(keys) else keys
    return {"title": FIDELITY_TITLE, **write_fidelity_table(out, zip(ordered.get("model", []), ordered.get("precision", [])),
                                                          fidelity)}


def kv_latency_plot(df: pd.DataFrame, out: Path) -> dict[str, Any] | None:
    """Mean TPOT against KV-cache bytes per token, one line per precision × load point across the
    models (the attention variants): does a smaller KV cache decode faster?"""
    ok = _ok_with(df, "kv_bytes_per_token", "tpot_s_mean")
    if not len(ok):
        return None
    return _lines_plot(ok, ["precision", "load_point"], "kv_bytes_per_token", "tpot_s_mean", "model",
                       "inference_kv_bytes_vs_latency", "KV bytes per token vs latency",
                       "KV-cache bytes per token (all layers, vLLM's KV cache spec)", "Mean TPOT (s), lower is better",
                       out, log_x=True)


FIDELITY_COLUMNS = {"ppl": "fid_ppl", "kl_mean": "fid_kl_mean", "kl_p99": "fid_kl_p99",
                    "top1_agreement": "fid_top1_agreement"}


def attach_fidelity(df: pd.DataFrame, fidelity: Mapping[tuple[str, str], dict[str, Any]]) -> pd.DataFrame:
    """Each row's fidelity to the baseline (``fidelity``: effbench.fidelity.table.load_fidelity of
    the files the aggregation was given), as figure columns with their sources and, where a figure
    is absent, its reason."""
    df = df.copy()
    cols: dict[str, list[Any]] = {c + x: [] for c in FIDELITY_COLUMNS.values() for x in ("", "__source", "__missing")}
    for _, r in df.iterrows():
        f = fidelity.get((r["model"], r["precision"]), {})
        for key, col in FIDELITY_COLUMNS.items():
            v = f.get(key)
            cols[col].append(v)
            cols[col + "__source"].append(f"fidelity:{f.get('engine')}:{f.get('positions')}_positions" if v is not None
                                          else "unavailable")
            cols[col + "__missing"].append(None if v is not None else (f.get(key + "__missing") or FIDELITY_NO_RUN))
    for k, v in cols.items():
        df[k] = pd.Series(v, index=df.index, dtype=object)
    for col in FIDELITY_COLUMNS.values():
        df[col] = pd.to_numeric(df[col])
    return attach_verdict(df, fidelity)


def aggregate_quantize(quant_records: list[Path], score_files: list[Path], out: Path, baseline: str,
                       fidelity_files: Iterable[Path] = ()) -> dict[str, Any]:
    from .frame import read_stage_records

    quant = read_stage_records(quant_records, "quantize")
    scores = load_scores(score_files)
    fidelity = load_fidelity(fidelity_files)
    manifest = aggregate_stage("quantize", quant_records, out, QUANTIZE,
                               enrich=lambda raw: attach_fidelity(attach_quality(raw, quant, scores, baseline), fidelity))
    manifest.setdefault("extra_tables", []).append(fidelity_table(quant, Path(out), fidelity))
    write_text(manifest_path(Path(out), "quantize"), json.dumps(manifest, indent=2) + "\n")
    return manifest


def aggregate_inference(records: list[Path], quant_records: list[Path], score_files: list[Path], out: Path,
                        baseline: str, table_load_point: str, fidelity_files: Iterable[Path] = ()) -> dict[str, Any]:
    from .frame import read_stage_records, stage_rows

    out = Path(out)
    quant = read_stage_records(quant_records, "quantize")
    scores = load_scores(score_files)
    fidelity = load_fidelity(fidelity_files)

    def table_rows(raw: pd.DataFrame) -> pd.DataFrame:
        raw = raw[raw["load_point"] == table_load_point] if len(raw) else raw
        return attach_fidelity(attach_quality(raw.reset_index(drop=True), quant, scores, baseline), fidelity)

    manifest = aggregate_stage("inference", records, out, INFERENCE, enrich=table_rows)
    all_points = stage_rows(read_stage_records(records, "inference"), INFERENCE_LATENCY)
    latency = write_tables(all_points, INFERENCE_LATENCY, out)
    tasks = task_table(scores, INFERENCE, out, baseline)
    manifest["extra_tables"] = [
        {"title": "Accuracy per task", **tasks},
        {"title": INFERENCE_LATENCY.title, **latency},
        fidelity_table(quant, out, fidelity),
    ]
    plots = ((throughput_latency_plot, "inference_throughput_vs_latency", "Throughput vs latency (load points)",
              "no ok inference run with IT and E2E"),
             (kv_latency_plot, "inference_kv_bytes_vs_latency", "KV bytes per token vs latency",
              "no ok inference run with KV bytes per token and TPOT"))
    for plot, name, title, reason in plots:
        made = plot(all_points, out)
        if made:
            manifest["plots"].append(made)
        else:
            manifest["skipped"].append({"name": name, "kind": "plot", "title": title, "reason": reason})
    drawn, skipped = rate_sweep_plots(all_points, out)  # the open-loop curves (effbench.aggregate.open_loop)
    manifest["plots"] += drawn
    manifest["skipped"] += skipped
    manifest["table_load_point"] = table_load_point
    write_text(manifest_path(out, "inference"), json.dumps(manifest, indent=2) + "\n")
    return manifest
