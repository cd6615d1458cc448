"""The caption of each table, leaderboard and plot: what is measured, where each figure comes
from, and its noise. Captions are Markdown (rendered by :mod:`.markdown`), built from the
record schema's column docs, the stage spec, the records behind the rows (their ``__source``
and ``__ci_method`` columns) and the manifest; nothing here is a hand-written number."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from ..aggregate.frame import is_missing
from ..aggregate.scopes import MIXED_MARK, scopes_of
from ..aggregate.specs import ENERGY_COLUMNS, ColumnSpec, StageSpec
from ..aggregate.tables import FALLBACK_MARK, SHARED_MARK, SHORT_MARK
from ..measure.energy_scope import SCOPE_NOTES, mixed_scope_flag
from ..fidelity.table import FIDELITY_MARK
from ..fidelity.table import TITLE as FIDELITY_TITLE
from ..record import COLUMNS, RECORD_FILE
from .inputs import StageInput

DOCS = {c.name: c.doc for c in COLUMNS}
# Figures of the serving stages joined at aggregation (effbench.aggregate.serving), not measured
# by the serving run: where they come from, and what their interval is.
JOINED = {
    "accuracy": ("the mean of lm-evaluation-harness scores (`eval/<model>/<precision>/scores.json`) over the tasks "
                 "measurable at the model's baseline precision (`perf_tasks`; docs/quality.md)",
                 "± 1.96 × the standard error of the mean over those tasks (`normal_se`, from the harness's stderr)"),
    "perf_tasks": ("the tasks measurable at the model's baseline precision (above chance and both controls)",
                   "none (a list)"),
    "accuracy_drop": ("1 − Perf / the baseline's Perf on the same tasks", "delta method with the covariance of the "
                      "items both precisions scored (paired); unpaired where per-item results are missing, labelled"),
    "quality_p": ("McNemar's exact test (the sign-flip test where ties score fractions) on the paired items",
                  "none (a p-value)"),
    "quality_test": ("the test behind 'Perf vs baseline'", "none (a label)"),
    "mcr_nominal": ("(baseline bits / bits) × (accuracy / baseline accuracy)",
                    "delta method on the accuracy ratio, paired over the items (the baseline's own MCR is exactly 1)"),
    "mcr_disk": ("(baseline weight bytes on disk / weight bytes) × (accuracy / baseline accuracy)",
                 "delta method on the accuracy ratio, paired over the items (the baseline's own MCR is exactly 1)"),
    "disk_bytes": ("the quantize record of the model and precision", "none (a size)"),
    "fid_ppl": ("`fidelity/<model>/<precision>/fidelity.json` (docs/fidelity.md)", "none recorded"),
    "fid_kl_mean": ("`fidelity/<model>/<precision>/fidelity.json`", "none recorded"),
    "fid_kl_p99": ("`fidelity/<model>/<precision>/fidelity.json`", "none recorded"),
    "fid_top1_agreement": ("`fidelity/<model>/<precision>/fidelity.json`", "none recorded"),
    "fid_verdict": ("the verdict of `fidelity/<model>/<precision>/fidelity.json` against its thresholds "
                    "(docs/fidelity.md)", "none (a verdict)"),
}
SERVING = ("quantize", "inference")
MARKS = (f"**[{SHARED_MARK}]** on a row: the cell was not measured alone on its host (its timed figures are not "
         f"comparable); **[{FALLBACK_MARK}]**: another engine than the configured one served it; "
         f"**[{SHORT_MARK}]** on an energy figure: its window held fewer than 20 energy-counter updates (coarse); "
         "**n/a [k]**: not measured, reason k in the notes; **OOM** / **failed**: the run did not finish "
         "(see *Failed, skipped and flagged*).")


def _direction(c: ColumnSpec) -> str:
    return f" ({c.better} is better)" if c.better else ""


def _counts(values: pd.Series) -> str:
    c = Counter(str(v) for v in values if not is_missing(v))
    return ", ".join(f"`{k}`" + (f" ×{n}" if n > 1 else "") for k, n in sorted(c.items()))


def column_source(stage: str, col: str, runs: pd.DataFrame) -> str:
    """Where a column's values come from: the records' ``__source`` values, or the join."""
    if stage in SERVING and col in JOINED:
        return "joined at aggregation from " + JOINED[col][0]
    src = col + "__source"
    if src in runs.columns and len(runs):
        found = _counts(runs[src][runs[col].notna()] if col in runs.columns else runs[src])
        if found:
            return found
        if col in runs.columns and runs[col].isna().all():
            return "none: not measured in any run (the reasons are in the table's notes)"
    return "the record's column `" + col + "`" if col in runs.columns else "not in the records"


def column_noise(stage: str, col: str, runs: pd.DataFrame) -> str:
    """How a column's interval was made, from the records' ``__ci_method`` and ``__ci_n``."""
    if stage in SERVING and col in JOINED:
        return JOINED[col][1]
    method, n = col + "__ci_method", col + "__ci_n"
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    if method not in ok.columns or not len(ok) or ok[method].isna().all():
        return "no interval recorded"
    have = ok[ok[method].notna()]
    ns = sorted({int(v) for v in have[n] if not is_missing(v)}) if n in have.columns else []
    span = "" if not ns else f", n = {ns[0]}" if len(ns) == 1 else f", n = {ns[0]}–{ns[-1]}"
    return f"{_counts(have[method])}{span} ({len(have)} of {len(ok)} ok runs)"


def table_caption(stage: StageInput, spec: StageSpec, runs: pd.DataFrame, csv_rel: str) -> str:
    """What a stage table measures, each column's source and noise, and how to read its marks."""
    keys = ", ".join(f"{h} (`{k}`)" for k, h in zip(spec.row_keys, spec.key_headers))
    lines = [
        f"**What is measured.** One row per cell ({keys}); a cell run several times shows the median of "
        "its ok runs, which has no interval. Columns:",
        "",
    ]
    for c in spec.columns:
        lines.append(f"- **{c.header}**{_direction(c)}: {DOCS.get(c.column, c.column)} "
                     f"Source: {column_source(spec.stage, c.column, runs)}. "
                     + (f"Noise: {column_noise(spec.stage, c.column, runs)}." if c.metric else ""))
    lines += [
        "",
        f"**Source.** {len(runs)} records (`<stage>/<cell>/{RECORD_FILE}`, listed in the stage's manifest), "
        f"aggregated by `effbench.aggregate` into `{csv_rel}`; the raw numbers of that file are under the table.",
        "",
        "**Noise.** `value ± h`: h is the half-width of the figure's 95 % interval (docs/noise.md). " + MARKS,
    ]
    scope = table_energy_scope(spec, runs)
    if scope:
        lines += ["", scope]
    return "\n".join(lines)


def leaderboard_caption(stage: StageInput) -> str:
    groups = stage.manifest.get("leaderboard_groups", [])
    spec = stage.spec
    headers = {m: spec.column(m).header for m in spec.leaderboard}
    lines = [
        f"**What is measured.** Per group ({', '.join(spec.group_by)}), each of "
        f"{', '.join(headers.values()) or 'no metric'} is min-max normalised so that 1 is best; the score is their "
        "mean over the metrics every ok row of the group has; rank 1 is best.",
        "",
        f"**Source.** The stage table's rows (`{stage.manifest['tables']['csv']}`), "
        f"written to `{stage.manifest['leaderboard']['csv']}`.",
        "",
        "**Noise.** Ranks are tied where intervals overlap the tie group's leader (1, 1, 3); a metric whose spread "
        "across the group is within its noise is left out of the score; **n.s.**: the quality figure does not "
        "differ from the group's best by more than 2 combined standard errors (docs/noise.md).",
    ]
    if groups:
        lines.append("")
        for g in groups:
            used = ", ".join(headers.get(m, m) for m in g.get("metrics_used", [])) or "none"
            excluded = "; ".join(f"{headers.get(m, m)} ({why})" for m, why in (g.get("metrics_excluded") or {}).items())
            lines.append(f"- {g['group']}: scored on {used}" + (f"; excluded: {excluded}" if excluded else "")
                         + (f"; {g['note']}" if g.get("note") else "") + ".")
    return "\n".join(lines)


def energy_scope_text(scopes: list[str], flag: str | None = None, unknown: bool = False) -> str:
    """What the energy figures beside it counted: a sentence per scope, and the mixed-scope warning
    where they differ (``flag``: mixed_scope_flag's, computed here when None)."""
    if not scopes:
        return ("**Energy scope.** Not recorded in the records (e.g. written before schema 5): what the energy "
                "counter covered is unknown.") if unknown else ""
    flag = flag if flag is not None else mixed_scope_flag(scopes)
    text = "**Energy scope.** " + "; ".join(SCOPE_NOTES.get(s, s) for s in scopes) + "."
    if flag:
        text += f" **[{MIXED_MARK}]** {flag}."
    if unknown:
        text += " Some rows' records do not say what their counter covered (e.g. written before schema 5)."
    return text


def table_energy_scope(spec: StageSpec, runs: pd.DataFrame) -> str:
    """The energy-scope sentence of a table with an energy column, from the records behind it."""
    cols = [c.column for c in spec.columns if c.column in ENERGY_COLUMNS]
    if not cols or not len(runs) or not any(c in runs.columns for c in cols):
        return ""
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    measured = ok[[any(not is_missing(r.get(c)) for c in cols if c in ok.columns) for _, r in ok.iterrows()]] \
        if len(ok) else ok
    if not len(measured):
        return ""
    unknown = "energy_scope" not in measured.columns or measured["energy_scope"].isna().any()
    return energy_scope_text(scopes_of(measured, cols), unknown=bool(unknown))


def plot_energy_scope(plot: dict[str, Any]) -> str:
    """The energy-scope sentence of a plot with an energy axis (its manifest entry's scopes)."""
    if "energy_scopes" not in plot:
        return ""
    return energy_scope_text(list(plot["energy_scopes"]), plot.get("energy_scope_flag"),
                             unknown=not plot["energy_scopes"])


LINE_PLOTS = {
    "inference_throughput_vs_latency": "One line per model × precision through its load points (labelled).",
    "inference_rate_sweep_ttft": "One line per model × precision through the points of each open-loop rate sweep "
                                 "(each point labelled by its offered rate, req/s): TTFT against request "
                                 "throughput, where the curve bends is the load the engine sustains.",
    "inference_rate_sweep_goodput": "One line per model × precision through the points of each open-loop rate sweep "
                                    "(each point labelled by its offered rate, req/s): goodput (requests/s that met "
                                    "both SLOs) against request throughput.",
    "inference_kv_bytes_vs_latency": "One line per precision × load point across the models (the attention "
                                     "variants), x on a log₂ scale.",
}


def plot_caption(stage: StageInput, plot: dict[str, Any]) -> str:
    x, y = plot.get("x", ""), plot.get("y", "")
    name = plot.get("name", "")
    if name in LINE_PLOTS:
        which = "open-loop (rate) record" if name.startswith("inference_rate_sweep") else "serving record"
        shape = LINE_PLOTS[name] + f" Every ok {which} with both figures is a point."
    else:
        shape = ("Each point is an ok cell of the table, coloured by its leaderboard group; the ringed points and "
                 "the dashed step line are the Pareto front (no other cell is at least as good on both axes and "
                 "better on one).")
    lines = [  # each axis' source and noise is in the glossary, once; the points carry their intervals on hover
        f"**What is measured.** {shape} y: `{y}`; x: `{x}` (definitions, sources and noise: "
        "[glossary](#glossary)). Hover a point for its cell, its figures and their 95 % intervals.",
    ]
    scope = plot_energy_scope(plot)
    if scope:
        lines += ["", scope]
    if plot.get("left_out"):
        lines += ["", "**Left out of this plot:** " + "; ".join(plot["left_out"]) + "."]
    return "\n".join(lines)


EXTRA = {
    "inference_tasks": ("**What is measured.** Accuracy per evaluation task (lm-evaluation-harness), value ± "
                        "its standard error; the mean over tasks is the Perf of the serving table. **Source.** "
                        "`eval/<model>/<precision>/scores.json`. **Noise.** ± is one standard error (not a 95 % "
                        "interval); docs/quality.md compares each task with chance and its two controls (question-blind, swapped subject)."),
    "fidelity": ("**What is measured.** Each precision against the baseline on held-out text through the serving "
                 "engine: perplexity, KL(baseline ‖ precision) of the next-token distributions (mean and p99 over "
                 "positions), top-1 agreement on the baseline's path. **Source.** "
                 "`fidelity/<model>/<precision>/fidelity.json` (docs/fidelity.md). **Noise.** No interval is "
                 "recorded; the positions scored are in the Positions column. **Verdict.** Fidelity: pass when every "
                 "threshold stated above the table holds, fail (with the figures that missed) otherwise, baseline for "
                 f"the baseline precision; a failing precision is flagged **[{FIDELITY_MARK}]** in *Failed, skipped "
                 "and flagged* and left out of `recommend` unless `--allow-fidelity-fail`."),
}


def extra_table_caption(stage: StageInput, entry: dict[str, Any], spec: StageSpec | None) -> str:
    """An extra table's caption: a spec's table (the latency table) like a stage table, others by name."""
    stem = entry["csv"].rsplit("/", 1)[-1].removesuffix(".csv")
    if spec is not None:
        return table_caption(stage, spec, stage.records, entry["csv"])
    return EXTRA.get(stem, f"**Source.** `{entry['csv']}`, written by the {stage.stage} aggregation.")
