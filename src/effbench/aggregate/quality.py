"""The serving tables' quality columns: which tasks make up Perf, and each precision against the
baseline on the same items (docs/quality.md, docs/noise.md).

**Perf tasks.** A task at chance (or at one of its controls) measures nothing, and
averaging it into Perf only adds noise. Perf is the unweighted mean over the tasks *measurable at
the model's baseline precision* (``measurable: true`` in the baseline's ``scores.json``), and
every precision of that model averages that same task set, so both sides of a comparison (Perf vs
baseline, the drop, MCR) hold the same tasks. A task the baseline measures but int4 has lost stays
in, so the loss shows as a drop instead of vanishing from the average. A task with no verdict
(``measurable`` null: no question-blind control, e.g. lm-eval's own benchmarks) is kept, unchecked,
and named in the source. No task measurable: Perf is missing with the reason, and so is everything
compared on it. Without baseline scores a row falls back to its own measurable tasks (said).

**Paired comparison.** Both precisions score the same items, so the comparison uses the per-item
results ``scores.json`` keeps (``items``: {task: {doc_id: score}}): the exact McNemar test on the
discordant items for "Perf vs baseline" (the sign-flip test when tie fractions make a difference
fractional), the paired delta method for the drop's and MCR's intervals
(:mod:`effbench.measure.paired`). Where either side lacks them (an older ``scores.json``) or they
do not match its scores, the unpaired path is the fallback and says so (``quality_test``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..measure import formulas, paired, spread

# The baseline precision's MCR: its size and accuracy over themselves, exactly 1, with no interval.
BASELINE_MCR = "baseline precision: 1 by definition (exact, no interval)"
BASELINE_DROP = "baseline precision: 0 by definition (exact, no interval)"
UNPAIRED = "unpaired: 2 combined SEs"  # the fallback test, followed by why the paired one could not run
SELF = "the baseline precision (not compared with itself)"
TEST_NAMES = {paired.MCNEMAR: "McNemar exact", paired.SIGN_FLIP: "sign-flip exact (ties 1/k)"}


@dataclass(frozen=True)
class PerfTasks:
    """The tasks one row's Perf averages, and why when there are none."""

    tasks: tuple[str, ...]
    reference: str  # the precision whose measurable tasks these are
    unchecked: tuple[str, ...] = ()  # kept without a verdict (no question-blind control)
    missing: str | None = None
    left_out: tuple[str, ...] = field(default=())  # tasks at chance or at one of their controls


def _verdict(task: str, t: dict[str, Any]) -> str:
    def z(k: str) -> str:
        return "n/a" if t.get(k) is None else f"{t[k]:.1f}"

    return f"{task}: z chance {z('z_chance')}, z blind {z('z_control')}, z swapped {z('z_swapped')}"


def perf_tasks(s: dict[str, Any], sb: dict[str, Any] | None, baseline: str, precision: str) -> PerfTasks:
    """The tasks measurable at the baseline precision (``sb``), or at this precision when the
    baseline was not scored; each must be among this row's scored tasks."""
    ref, ref_name = (sb, baseline) if sb else (s, precision)
    kept, unchecked, out = [], [], []
    for task, t in ref["tasks"].items():
        m = t.get("measurable")
        if m is False:
            out.append(task)
            continue
        kept.append(task)
        if m is None:
            unchecked.append(task)
    where = f"at the baseline {baseline}" if sb else f"at {precision} (no {baseline} scores to choose them)"
    if not kept:
        verdicts = "; ".join(_verdict(k, ref["tasks"][k]) for k in out)
        return PerfTasks((), ref_name, (), f"not measurable: no task is measurable {where} "
                                            f"(z > 3 above chance and above its controls; {verdicts})", tuple(out))
    lacking = [k for k in kept if k not in s["tasks"]]
    if lacking:
        return PerfTasks((), ref_name, (), f"{precision} was not scored on {', '.join(lacking)}, "
                                            f"measurable {where}", tuple(out))
    return PerfTasks(tuple(kept), ref_name, tuple(unchecked), None, tuple(out))


def perf_of(s: dict[str, Any], tasks: tuple[str, ...]) -> tuple[float, float | None, int]:
    """(Perf, its SE over independent tasks sqrt(Σ se²) / k or None, items behind it)."""
    ts = [s["tasks"][k] for k in tasks]
    value = sum(float(t["value"]) for t in ts) / len(ts)
    if any(t.get("stderr") is None for t in ts):
        return value, None, 0
    return (value, math.sqrt(sum(float(t["stderr"]) ** 2 for t in ts)) / len(ts),
            sum(int(t.get("n") or 0) for t in ts))


def paired_of(s: dict[str, Any], sb: dict[str, Any], tasks: tuple[str, ...]
              ) -> tuple[paired.PairedComparison | None, str | None]:
    """The paired comparison of ``s`` against ``sb`` on ``tasks`` from the per-item results, or
    None and why not: either side lacks them for a task (an older ``scores.json``), the two hold
    different items, or a task's items do not average to its score."""
    pairs = []
    for k in tasks:
        a, b = (s.get("items") or {}).get(k), (sb.get("items") or {}).get(k)
        if not a or not b:
            return None, f"no per-item results of {k} in scores.json at {s['precision'] if not a else sb['precision']}"
        if set(a) != set(b):
            return None, f"{k}: the two precisions were scored on different items"
        keys = sorted(a)
        x, y = [float(a[i]) for i in keys], [float(b[i]) for i in keys]
        for v, own in ((x, s), (y, sb)):
            if abs(sum(v) / len(v) - float(own["tasks"][k]["value"])) > 1e-6:
                return None, f"{k}: the per-item results at {own['precision']} do not average to its score"
        pairs.append((x, y))
    return paired.paired_comparison(pairs), None


def _ci(row: dict[str, Any], name: str, iv: spread.Interval | None) -> None:
    row[name + "__ci_low"] = iv.low if iv else None
    row[name + "__ci_high"] = iv.high if iv else None
    row[name + "__ci_n"] = iv.n if iv else None
    row[name + "__ci_method"] = iv.method if iv else None


def _mcr_missing(row: dict[str, Any], why: str) -> None:
    for k in ("mcr_nominal", "mcr_disk"):
        row[k], row[k + "__source"], row[k + "__missing"] = None, "unavailable", why
        _ci(row, k, None)


def _compare_missing(row: dict[str, Any], why: str | None) -> None:
    row["quality_vs_baseline"] = row["quality_p"] = row["quality_test"] = row["accuracy_drop"] = None
    row["accuracy_drop__source"] = None
    for k in ("quality_vs_baseline", "quality_p", "quality_test", "accuracy_drop"):
        row[k + "__missing"] = why
    _ci(row, "accuracy_drop", None)


def quality_row(model: str, precision: str, baseline: str, s: dict[str, Any] | None, sb: dict[str, Any] | None,
                size: dict[str, Any], size_b: dict[str, Any] | None, no_scores: str) -> dict[str, Any]:
    """Perf, its tasks, the comparison with the baseline and both MCRs of one (model, precision)."""
    row: dict[str, Any] = {"accuracy_tasks_json": json.dumps(s["tasks"], sort_keys=True) if s else None}
    sel = perf_tasks(s, sb, baseline, precision) if s else PerfTasks((), precision, (), no_scores)
    perf, se, n_items = perf_of(s, sel.tasks) if s and sel.tasks else (None, None, 0)
    row["accuracy"], row["accuracy__missing"] = perf, sel.missing
    row["perf_tasks"] = ", ".join(sel.tasks) if sel.tasks else None
    row["perf_tasks__missing"] = sel.missing
    if perf is None:
        row["accuracy__source"] = "unavailable"
    else:
        row["accuracy__source"] = (f"lm_eval:{s['backend']}:mean of {len(sel.tasks)} of {len(s['tasks'])} tasks, "
                                   f"those measurable at {sel.reference}"
                                   + (f" ({', '.join(sel.unchecked)}: no control, kept unchecked)"
                                      if sel.unchecked else ""))
    _ci(row, "accuracy", spread.normal_interval(perf, se, n_items, lower=0.0) if se is not None else None)
    # sel.tasks are the baseline's measurable tasks: the baseline has each of them
    perf_b, se_b, _ = perf_of(sb, sel.tasks) if sb and sel.tasks else (None, None, 0)
    why = None
    if not s or not sb:
        why = f"needs the accuracy of {model} at {precision} and at the baseline {baseline}"
    elif perf is None or perf_b is None:
        why = f"no Perf to compare: {sel.missing}"
    elif perf_b <= 0:
        why = f"the baseline {baseline} scored 0"
    sizes_why = why or (None if size and size_b else
                        f"needs the quantize records of {model} at {precision} and {baseline}")
    if precision == baseline:
        _compare_missing(row, why)
        if not why:
            row.update(quality_vs_baseline="baseline", quality_test="baseline", accuracy_drop=0.0,
                       accuracy_drop__source=BASELINE_DROP, quality_p__missing=SELF)
            for k in ("quality_vs_baseline", "quality_test", "accuracy_drop"):
                row[k + "__missing"] = None
        if sizes_why:
            _mcr_missing(row, sizes_why)
        else:  # the baseline against itself: 1 by definition, one measurement, no interval (docs/noise.md)
            for k in ("mcr_nominal", "mcr_disk"):
                row[k], row[k + "__source"], row[k + "__missing"] = 1.0, BASELINE_MCR, None
                _ci(row, k, None)
        return row
    if why:
        _compare_missing(row, why)
        _mcr_missing(row, sizes_why)
        return row
    pc, unpaired_why = paired_of(s, sb, sel.tasks)
    drop = 1 - perf / perf_b
    if pc is not None:
        ratio_se, n, how = pc.ratio_se(), pc.n, f"paired over {pc.n} items"
        row["quality_vs_baseline"] = "significant" if pc.significant else "not significant"
        row["quality_p"], row["quality_p__missing"] = pc.p_value, None
        row["quality_test"] = (f"{TEST_NAMES[pc.test]}: {_count(pc.worse)} worse, {_count(pc.better)} better "
                               f"of {pc.n} items")
    else:
        ok = se is not None and se_b is not None
        ratio_se, n, how = (spread.ratio_se(perf, se, perf_b, se_b) if ok and perf > 0 else None), n_items, "unpaired"
        row["quality_vs_baseline"] = spread.difference_label(perf, se, perf_b, se_b) if ok else None
        row["quality_p"], row["quality_p__missing"] = None, f"unpaired fallback, no exact test: {unpaired_why}"
        row["quality_test"] = f"{UNPAIRED} ({unpaired_why})"
    row["quality_vs_baseline__missing"] = None if row["quality_vs_baseline"] else "no standard errors"
    row["quality_test__missing"] = None
    row["accuracy_drop"], row["accuracy_drop__missing"] = drop, None
    row["accuracy_drop__source"] = f"1 - Perf / Perf at {baseline}, the same tasks"
    _ci(row, "accuracy_drop", None if ratio_se is None else spread.Interval(
        drop - spread.Z95 * ratio_se, drop + spread.Z95 * ratio_se, n, "delta_method"))
    if sizes_why:
        _mcr_missing(row, sizes_why)
        return row
    for k, unit, base_size, own in (("mcr_nominal", "bits", size_b["weight_bits"], size["weight_bits"]),
                                    ("mcr_disk", "safetensors bytes", size_b["disk_bytes"], size["disk_bytes"])):
        value = formulas.mcr(base_size, own, perf, perf_b)
        row[k], row[k + "__missing"] = value, None
        row[k + "__source"] = (f"{unit} {base_size}/{own} × Perf ratio" if k == "mcr_nominal" else
                               f"{unit} ratio × Perf ratio") + f" (interval: delta method, {how})"
        iv = None
        if ratio_se is not None:
            h = spread.Z95 * (base_size / own) * ratio_se
            iv = spread.Interval(max(value - h, 0.0), value + h, n, "delta_method")
        _ci(row, k, iv)
    return row


def _count(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"
