"""Issue #19 items 2 and 3: Perf over the tasks a model measures, and bf16 against int4 on the same items.

Hand-made scores.json files (per-task verdicts from effbench.evaluate.scoring, per-item results
under ``items``) joined onto hand-made serving and quantize records, as tests/unit/test_serving.py
does: a task at chance is left out of Perf and the table names the tasks used; no measurable task
leaves Perf missing with the reason; the drop is tested paired (McNemar) with a paired interval, and
MCR's interval carries the paired covariance; the tables show each task's chance and control."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

import record_consistency as rc

from effbench.aggregate.frame import read_stage_records
from effbench.aggregate.serving import aggregate_inference, aggregate_quantize, attach_quality, load_scores
from effbench.evaluate.run import summarize
from effbench.evaluate.scoring import task_summary, verdict
from effbench.evaluate.tasks import control_task
from effbench.measure import paired, spread
from effbench.measure.figure import Figure
from effbench.record import write_record

N = 200
REL, FACT = "effbench_mc_relation", "effbench_mc_fact"
# bf16 right on items 0-99 of the relation task; int4 loses 12 of them (0-11) and gains 1 (100):
# 12 worse, 1 better of 200, 0.500 -> 0.445.
REL_BF16 = [1.0 if i < 100 else 0.0 for i in range(N)]
REL_INT4 = [0.0 if i < 12 else 1.0 if i < 100 or i == 100 else 0.0 for i in range(N)]
CONTROL = [1.0 if i % 4 == 0 else 0.0 for i in range(N)]  # the question-blind twin: 1/4
SWAPPED = [1.0 if i % 4 == 2 else 0.0 for i in range(N)]  # the swapped-subject twin: 1/4
AT_CHANCE = [1.0 if i % 4 == 1 or i in (2, 6, 10) else 0.0 for i in range(N)]  # 53/200 = 0.265
LEARNT = [1.0 if i % 5 else 0.0 for i in range(N)]  # 0.8


def task_entry(scores: list[float], control: list[float]) -> tuple[dict, dict[str, float]]:
    """A local task's scores.json entry as effbench.evaluate.run writes it, and its per-item results."""
    items = {i: (v, 1) for i, v in enumerate(scores)}
    summary = task_summary(items)
    entry = {"metric": "acc_tie", **summary, "lm_eval_acc": summary["value"], "lm_eval_acc_stderr": summary["stderr"],
             **verdict(summary, items, {i: (v, 1) for i, v in enumerate(control)}, 0.25,
                       {i: (v, 1) for i, v in enumerate(SWAPPED)})}
    return entry, {str(i): v for i, v in enumerate(scores)}


def scores_file(path: Path, precision: str, tasks: dict[str, list[float]], items: bool = True) -> Path:
    entries = {t: task_entry(v, CONTROL) for t, v in tasks.items()}
    s = {"model": "tiny", "precision": precision, "backend": "hf",
         "tasks": {t: e for t, (e, _) in entries.items()},
         "accuracy": sum(e["value"] for e, _ in entries.values()) / len(entries)}
    if items:
        s["items"] = {t: it for t, (_, it) in entries.items()}
    path.write_text(json.dumps(s))
    return path


T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
BASE = {"run_id": "x", "status": "ok", "settings_json": "{}", "settings_hash": "h", "config_hash": "c",
        "code_version": "git:t", "library_versions_json": "{}", "host": "devbox", "device_kind": "cpu",
        "device_name": "Test CPU", "device_count": 1, "seed": 1, "started_at": T0, "ended_at": T0 + timedelta(1)}
SIZES = {"bf16": (16, 7_350_000), "int4": (4, 2_690_000)}


def records(tmp: Path) -> tuple[list[Path], list[Path]]:
    quant, inf = [], []
    for p, (bits, disk) in SIZES.items():
        q = tmp / "quantize" / "tiny" / p / "record.parquet"
        write_record(q, {**BASE, "run_id": f"q{p}", "stage": "quantize", "cell": f"tiny/{p}", "model": "tiny",
                         "precision": p, "weight_bits": bits, "disk_bytes": disk, "params_total": 1000,
                         "seconds": 1.0, "quant_method": "gptq" if p == "int4" else None})
        quant.append(q)
        r = tmp / "inference" / "tiny" / p / "offline" / "record.parquet"
        write_record(r, {**BASE, "run_id": f"i{p}", "stage": "inference", "cell": f"tiny/{p}/offline",
                         "model": "tiny", "precision": p, "load_point": "offline", "params_total": 1000,
                         "seconds": 2.0, "it_tokens_per_s": Figure.of(100.0 + bits, "clock"),
                         "amu_gb": Figure.of(1.0, "psutil_rss")})
        inf.append(r)
    return quant, inf


def joined(tmp: Path, bf16: dict[str, list[float]], int4: dict[str, list[float]], items: bool = True):
    quant, inf = records(tmp)
    scores = [scores_file(tmp / f"s_{p}.json", p, tasks, items) for p, tasks in (("bf16", bf16), ("int4", int4))]
    df = attach_quality(read_stage_records(inf, "inference"), read_stage_records(quant, "quantize"),
                        load_scores(scores), "bf16")
    return {r["precision"]: r for _, r in df.iterrows()}, quant, inf, scores


def md_cells(md: str, row_start: str) -> dict[str, str]:
    header = next(line for line in md.splitlines() if line.startswith("| Model |"))
    row = next(line for line in md.splitlines() if line.startswith(row_start))
    return dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))


# --- (a) Perf over measurable tasks ---------------------------------------------------------------------


def test_the_fixture_has_one_task_at_chance_and_one_measurable():
    fact, _ = task_entry(AT_CHANCE, CONTROL)
    rel, _ = task_entry(REL_BF16, CONTROL)
    assert fact["value"] == pytest.approx(0.265) and fact["measurable"] is False and fact["z_chance"] < 1
    assert rel["measurable"] is True and rel["z_chance"] > 3 and rel["z_control"] > 3 and rel["z_swapped"] > 3


def test_a_task_at_chance_is_left_out_of_perf_and_the_table_names_the_tasks_used(tmp_path):
    rows, quant, inf, scores = joined(tmp_path, {FACT: AT_CHANCE, REL: REL_BF16}, {FACT: AT_CHANCE, REL: REL_INT4})
    assert rows["bf16"]["accuracy"] == pytest.approx(0.5)  # the relation task alone, not (0.265 + 0.5) / 2
    assert rows["int4"]["accuracy"] == pytest.approx(0.445)
    assert rows["int4"]["perf_tasks"] == REL and rows["bf16"]["perf_tasks"] == REL
    assert "measurable at bf16" in rows["int4"]["accuracy__source"]
    assert rows["int4"]["mcr_nominal"] == pytest.approx(4 * 0.445 / 0.5)
    assert rows["int4"]["accuracy_drop"] == pytest.approx(1 - 0.445 / 0.5)
    out = tmp_path / "out"
    aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    aggregate_quantize(quant, scores, out, "bf16")
    for stage in ("inference", "quantize"):
        table = pd.read_csv(out / "tables" / f"{stage}.csv")
        assert list(table["perf_tasks"]) == [REL, REL], stage
        assert table["accuracy"].tolist() == pytest.approx([0.5, 0.445]), stage
        for row in table.to_dict("records"):
            rc.check_intervals(row)
        md = (out / "tables" / f"{stage}.md").read_text()
        assert md_cells(md, "| tiny | int4 |")["Perf tasks"] == REL, stage
        assert "measurable at the model's baseline precision" in md


def test_every_precision_of_a_model_averages_the_tasks_measurable_at_the_baseline(tmp_path):
    # fact: at chance at bf16 but learnt at int4 -> still out of int4's Perf (not the same tasks otherwise);
    # arithmetic: learnt at bf16, lost at int4 -> stays in, so the loss shows as a drop.
    arith = "effbench_mc_arithmetic"
    rows, *_ = joined(tmp_path, {FACT: AT_CHANCE, REL: REL_BF16, arith: LEARNT},
                      {FACT: LEARNT, REL: REL_INT4, arith: AT_CHANCE})
    assert task_entry(LEARNT, CONTROL)[0]["measurable"] and not task_entry(AT_CHANCE, CONTROL)[0]["measurable"]
    assert rows["int4"]["perf_tasks"] == f"{REL}, {arith}" == rows["bf16"]["perf_tasks"]
    assert rows["int4"]["accuracy"] == pytest.approx((0.445 + 0.265) / 2)
    assert rows["bf16"]["accuracy"] == pytest.approx((0.5 + 0.8) / 2)


def test_no_measurable_task_leaves_perf_missing_with_the_reason(tmp_path):
    rows, quant, inf, scores = joined(tmp_path, {FACT: AT_CHANCE}, {FACT: AT_CHANCE})
    for p in ("bf16", "int4"):
        r = rows[p]
        assert pd.isna(r["accuracy"]) and r["accuracy__missing"].startswith("not measurable"), p
        assert "no task is measurable at the baseline bf16" in r["accuracy__missing"]
        assert f"{FACT}: z chance 0.5" in r["accuracy__missing"]
        assert pd.isna(r["perf_tasks"]) and pd.isna(r["mcr_nominal"]) and "not measurable" in r["mcr_nominal__missing"]
        assert r["quality_vs_baseline"] is None and "not measurable" in r["quality_vs_baseline__missing"]
    out = tmp_path / "out"
    aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    md = (out / "tables" / "inference.md").read_text()
    cells = md_cells(md, "| tiny | int4 |")
    assert cells["Perf"].startswith("n/a") and cells["MCR"].startswith("n/a")
    assert "not measurable: no task is measurable at the baseline bf16" in md
    assert pd.read_csv(out / "tables" / "inference.csv")["accuracy"].isna().all()


# --- (b) paired comparisons ----------------------------------------------------------------------------


def test_mcnemar_and_the_paired_interval_of_a_hand_made_two_by_two():
    # 100 items: both right 50, bf16 only 7, int4 only 2, neither 41.
    # McNemar: 9 discordant, min 2: p = 2 (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 2 · 46 / 512 = 0.1796875.
    assert paired.mcnemar_exact(7, 2) == pytest.approx(92 / 512, rel=1e-15)
    assert paired.mcnemar_exact(0, 0) == 1.0 and paired.mcnemar_exact(3, 3) == 1.0
    base = [1.0] * 57 + [0.0] * 43
    comp = [1.0] * 50 + [0.0] * 7 + [1.0] * 2 + [0.0] * 41
    pc = paired.paired_comparison([(comp, base)])
    assert (pc.worse, pc.better, pc.n, pc.test) == (7, 2, 100, paired.MCNEMAR)
    assert pc.p_value == pytest.approx(92 / 512)
    # per-item differences: -1 ×7, +1 ×2; mean -0.05; sample variance (9 - 100 · 0.05²) / 99
    se = math.sqrt((9 - 100 * 0.05**2) / 99 / 100)
    assert pc.diff == pytest.approx(-0.05) and pc.se_diff == pytest.approx(se)
    iv = pc.diff_interval()
    assert (iv.low, iv.high) == pytest.approx((-0.05 - 1.959963984540054 * se, -0.05 + 1.959963984540054 * se))
    assert (iv.low, iv.high) == pytest.approx((-0.10827, 0.00827), abs=1e-5) and iv.method == "paired_normal"


def test_the_sign_flip_test_is_exact_for_tie_fractions():
    # 2-way and 4-way ties make differences of 1/2, 1/4, 3/4: the p-value is the share of the 2^m sign
    # patterns whose |sum| reaches the observed one (brute force over all 2^10 here).
    diffs = [-1, -1, -1, -0.5, -0.75, -0.25, 1, 0.5, -1, -0.5, 0.0]
    nz = [d for d in diffs if d]
    obs = abs(sum(nz))
    hits = sum(abs(sum(s * abs(d) for s, d in zip(signs, nz))) >= obs - 1e-12
               for signs in itertools.product((1, -1), repeat=len(nz)))
    assert paired.sign_flip_p(diffs) == pytest.approx(float(Fraction(hits, 2 ** len(nz))), rel=1e-12)
    assert paired.sign_flip_p([-1] * 12 + [1]) == pytest.approx(paired.mcnemar_exact(12, 1))
    assert paired.sign_flip_p([0.25, -0.25]) == 1.0
    pc = paired.paired_comparison([([0.5, 1.0, 0.0], [1.0, 1.0, 0.25])])
    assert pc.test == paired.SIGN_FLIP and pc.worse == pytest.approx(0.75) and pc.better == 0


def test_a_real_drop_the_unpaired_test_misses_is_significant_paired(tmp_path):
    # Unpaired: 0.500 vs 0.445 with SEs 0.035 each: |0.055| < 2 · sqrt(se² + se²) = 0.100, "not significant".
    bf, i4 = task_summary({i: (v, 1) for i, v in enumerate(REL_BF16)}), task_summary(
        {i: (v, 1) for i, v in enumerate(REL_INT4)})
    assert spread.difference_label(i4["value"], i4["stderr"], bf["value"], bf["stderr"]) == "not significant"
    rows, quant, inf, scores = joined(tmp_path, {FACT: AT_CHANCE, REL: REL_BF16}, {FACT: AT_CHANCE, REL: REL_INT4})
    r = rows["int4"]
    # Paired: 12 worse, 1 better: McNemar p = 2 (1 + 13) / 2^13 = 0.00342.
    assert r["quality_vs_baseline"] == "significant"
    assert r["quality_p"] == pytest.approx(28 / 8192)
    assert r["quality_test"].startswith("McNemar exact") and "12 worse, 1 better of 200 items" in r["quality_test"]
    # the paired interval of the difference: per-item d = -1 ×12, +1 ×1: mean -0.055, sd² (13 - 200 · 0.055²) / 199
    se_d = math.sqrt((13 - 200 * 0.055**2) / 199 / N)
    iv = paired.paired_comparison([(REL_INT4, REL_BF16)]).diff_interval()
    assert (iv.low, iv.high) == pytest.approx((-0.055 - spread.Z95 * se_d, -0.055 + spread.Z95 * se_d))
    assert iv.high < 0  # excludes 0
    # MCR's interval: delta method with the paired covariance, by hand from the two item vectors.
    a, b = 0.445, 0.5
    var_a, var_b = statistics.variance(REL_INT4) / N, statistics.variance(REL_BF16) / N
    cov = statistics.covariance(REL_INT4, REL_BF16) / N
    se_ratio = math.sqrt(var_a / b**2 + a**2 * var_b / b**4 - 2 * a * cov / b**3)
    mcr = 4 * a / b
    assert r["mcr_nominal"] == pytest.approx(mcr)
    assert (r["mcr_nominal__ci_low"], r["mcr_nominal__ci_high"]) == pytest.approx(
        (mcr - spread.Z95 * 4 * se_ratio, mcr + spread.Z95 * 4 * se_ratio))
    unpaired_h = spread.Z95 * 4 * spread.ratio_se(a, i4["stderr"], b, bf["stderr"])
    assert r["mcr_nominal__ci_high"] - mcr < unpaired_h / 2  # the covariance takes most of it away
    # the drop 1 - a/b and its paired interval, which excludes 0
    assert r["accuracy_drop"] == pytest.approx(0.11)
    assert (r["accuracy_drop__ci_low"], r["accuracy_drop__ci_high"]) == pytest.approx(
        (0.11 - spread.Z95 * se_ratio, 0.11 + spread.Z95 * se_ratio))
    assert r["accuracy_drop__ci_low"] > 0
    base = rows["bf16"]
    assert base["quality_vs_baseline"] == "baseline" and base["mcr_nominal"] == 1.0
    assert pd.isna(base["mcr_nominal__ci_low"]) and base["accuracy_drop"] == 0.0 and pd.isna(base["quality_p"])
    out = tmp_path / "out"
    aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    md = (out / "tables" / "inference.md").read_text()
    cells = md_cells(md, "| tiny | int4 |")
    assert cells["Perf vs baseline"] == "significant" and cells["p (paired)"] == "0.0034"
    assert cells["Drop vs baseline"].startswith("0.110 ± ")
    assert "McNemar's exact test on the items scored at both precisions" in md
    for row in pd.read_csv(out / "tables" / "inference.csv").to_dict("records"):
        rc.check_intervals(row)


def test_without_per_item_results_the_unpaired_fallback_is_labelled(tmp_path):
    rows, *_ = joined(tmp_path, {FACT: AT_CHANCE, REL: REL_BF16}, {FACT: AT_CHANCE, REL: REL_INT4}, items=False)
    r = rows["int4"]
    assert r["quality_vs_baseline"] == "not significant"
    assert r["quality_test"].startswith("unpaired: 2 combined SEs") and "no per-item results" in r["quality_test"]
    assert pd.isna(r["quality_p"]) and "unpaired fallback" in r["quality_p__missing"]
    bf, i4 = (task_summary({i: (v, 1) for i, v in enumerate(x)}) for x in (REL_BF16, REL_INT4))
    h = spread.Z95 * 4 * spread.ratio_se(0.445, i4["stderr"], 0.5, bf["stderr"])
    assert (r["mcr_nominal__ci_low"], r["mcr_nominal__ci_high"]) == pytest.approx((3.56 - h, 3.56 + h))
    assert "unpaired" in r["mcr_nominal__source"]


# --- (c) the tables show chance and the control ----------------------------------------------------------


def test_the_task_table_shows_chance_the_control_and_the_verdict(tmp_path):
    _, quant, inf, scores = joined(tmp_path, {FACT: AT_CHANCE, REL: REL_BF16}, {FACT: AT_CHANCE, REL: REL_INT4})
    out = tmp_path / "out"
    aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    t = pd.read_csv(out / "tables" / "inference_tasks.csv")
    assert {"chance", "control", "control_stderr", "swapped", "swapped_stderr", "z_chance", "z_control", "z_swapped",
            "measurable", "in_perf"} <= set(t.columns)
    fact = t[(t["precision"] == "bf16") & (t["task"] == FACT)].iloc[0]
    assert fact["chance"] == 0.25 and fact["control"] == pytest.approx(0.25) and fact["swapped"] == pytest.approx(0.25)
    assert fact["z_chance"] == pytest.approx((0.265 - 0.25) / math.sqrt(0.25 * 0.75 / N))
    assert not fact["measurable"] and not fact["in_perf"]
    rel = t[(t["precision"] == "int4") & (t["task"] == REL)].iloc[0]
    assert rel["measurable"] and rel["in_perf"] and rel["z_control"] > 3 and rel["z_swapped"] > 3
    md = (out / "tables" / "inference_tasks.md").read_text()
    assert "| Chance | Blind ± SE | Swapped ± SE |" in md and "| z blind | z swapped | Measurable | In Perf |" in md
    row = next(line for line in md.splitlines() if line.startswith(f"| tiny | bf16 | {FACT} |"))
    assert "| 0.250 |" in row and row.rstrip().endswith("| no | no |")
    assert "the tasks measurable at the baseline precision (bf16)" in md


# --- the per-item results scores.json keeps ---------------------------------------------------------------


def _sample(doc_id: int, lls: list[float], gold: int, **extra) -> dict:
    return {"doc_id": doc_id, "target": gold, "filtered_resps": [(x, False) for x in lls],
            "doc": {"choices": ["a", "b", "c", "d"], "gold": gold}, **extra}


def test_summarize_keeps_each_items_score_keyed_by_doc_id():
    task, ctrl = "effbench_mc_fact", control_task("effbench_mc_fact")
    # items 0-2 right, item 3 a 2-way tie with gold, item 4 wrong
    lls = [[-1, -2, -3, -4]] * 3 + [[-1, -1, -3, -4], [-4, -1, -2, -3]]
    samples = [_sample(i, ll, 0) for i, ll in enumerate(lls)]
    builtin = [_sample(i, [-1, -2], 0, acc=float(i % 2), filter="none") for i in range(4)]
    builtin += [_sample(i, [-1, -2], 0, acc=1.0, filter="other") for i in range(4)]
    res = {"results": {task: {"acc,none": 0.8, "acc_stderr,none": 0.2}, ctrl: {"acc,none": 0.2},
                       "arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.29}},
           "n-samples": {task: {"effective": 5}}, "samples": {task: samples, ctrl: samples, "arc_easy": builtin}}
    out = summarize(res, [task, "arc_easy"], {})
    assert out["items"][task] == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 0.5, "4": 0.0}
    assert out["items"]["arc_easy"] == {"0": 0.0, "1": 1.0, "2": 0.0, "3": 1.0}  # the reported filter's
    assert ctrl not in out["items"] and "items" not in out["tasks"][task]
    assert sum(out["items"][task].values()) / 5 == pytest.approx(out["tasks"][task]["value"])
