"""Issue #22, serving as practitioners measure it, in the tables: fp8/int8 rows beside the paper's
with their Set, the latency table's open-loop columns (mode, rate, arrivals, SLOs, request
throughput, goodput, the queue/prefill/decode split and its energy, KV dtype), the energy scope in
the notes with mixed scopes flagged (tables, leaderboard, Pareto), and the rate-sweep curves drawn
only where there are rate points. Hand-made records of one model `tiny` (test_serving's BASE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from test_serving import BASE

from effbench.aggregate.open_loop import GOODPUT_PLOT, NO_RATE_POINTS, TTFT_PLOT, rate_sweep_plots
from effbench.aggregate.serving import aggregate_inference, aggregate_quantize
from effbench.measure.figure import Figure
from effbench.record import write_record

# precision: (bits, disk bytes, quant method, set, accuracy, energy scope of its serving records)
PRECISIONS = {
    "bf16": (16, 7_350_000, "cast", "paper", 0.40, "gpu"),
    "fp8": (8, 3_700_000, "fp8_dynamic", "beyond_paper", 0.40, "module"),
    "int8": (8, 3_700_000, "smoothquant_gptq", "beyond_paper", 0.39, "gpu"),
    "int4": (4, 2_690_000, "gptq", "paper", 0.36, "gpu"),
}
NO_SLO = "the load point sets no SLO (offline)"
# load point: (mode, offered rate, achieved req/s, goodput req/s, goodput share, TTFT p90 s)
POINTS = {
    "offline": ("offline", None, 3.0, None, None, 0.9),
    "poisson": ("rate", 1.0, 0.98, 0.95, 0.97, 0.12),
    "poisson@4.5": ("rate", 4.5, 3.1, 1.6, 0.84, 0.20),
    "poisson@10": ("rate", 10.0, 3.3, 1.2, 0.39, 0.85),
}


def serving_values(p: str, lp: str, scope: str | None) -> dict[str, Any]:
    """One inference record's open-loop columns (the figures a serving run of issue #22 writes)."""
    mode, rate, rps, good, frac, ttft = POINTS[lp]
    bits = PRECISIONS[p][0]
    v: dict[str, Any] = {
        "load_mode": mode, "kv_cache_dtype": "fp8" if p == "fp8" else "auto", "precision_set": PRECISIONS[p][3],
        "request_throughput_rps": Figure.of(rps * bits / 16 + rps, "clock"),
        "ttft_s_p90": Figure.of(ttft, "clock"), "ttft_s_mean": Figure.of(ttft * 0.7, "clock"),
        "queue_s_mean": Figure.of(0.01 * (1 + (rate or 0)), "vllm_request_stats"),
        "prefill_s_mean": Figure.of(0.05, "vllm_request_stats"), "decode_s_mean": Figure.of(0.6, "vllm_request_stats"),
        "prefill_energy_j_per_token": Figure.of(0.002, "nvml_step_attribution"),
        "decode_energy_j_per_token": Figure.of(0.02, "nvml_step_attribution"),
        "energy_j_per_token": Figure.of(0.03 * bits / 16, "nvml"), "aec_w": Figure.of(100.0 + bits, "nvml"),
        "energy_scope": scope,
    }
    if mode == "rate":
        v.update(request_rate_rps=rate, arrivals="poisson", slo_ttft_ms=200.0, slo_tpot_ms=50.0,
                 goodput_rps=Figure.of(good, "clock"), goodput_frac=Figure.of(frac, "clock"))
    else:
        v.update(goodput_rps=Figure.missing(NO_SLO), goodput_frac=Figure.missing(NO_SLO))
    return v


def write_serving(tmp: Path, points: tuple[str, ...] = tuple(POINTS), scopes: dict[str, str] | None = None,
                  precisions: tuple[str, ...] = tuple(PRECISIONS)) -> tuple[list[Path], list[Path], list[Path]]:
    """Quantize and inference records at their cells' paths under ``tmp`` and the scores files."""
    quant, inf, scores = [], [], []
    for p in precisions:
        bits, disk, method, pset, acc, scope = PRECISIONS[p]
        scope = (scopes or {}).get(p, scope)
        q = tmp / "quantize" / "tiny" / p / "record.parquet"
        write_record(q, {**BASE, "run_id": f"q{p}", "stage": "quantize", "cell": f"tiny/{p}", "model": "tiny",
                         "precision": p, "weight_bits": bits, "disk_bytes": disk, "params_total": 1000,
                         "seconds": 1.0, "quant_method": method, "precision_set": pset})
        quant.append(q)
        for lp in points:
            r = tmp / "inference" / "tiny" / p / lp / "record.parquet"
            write_record(r, {**BASE, "run_id": f"i{p}{lp}", "stage": "inference", "cell": f"tiny/{p}/{lp}",
                             "model": "tiny", "precision": p, "load_point": lp, "params_total": 1000,
                             "seconds": 2.0, "it_tokens_per_s": Figure.of(100.0 + bits, "clock"),
                             "e2e_s_mean": Figure.of(0.7, "clock"), "amu_gb": Figure.of(bits / 8, "psutil_rss"),
                             "tpot_s_mean": Figure.of(0.01, "clock"), **serving_values(p, lp, scope)})
            inf.append(r)
        s = tmp / f"s_{p}.json"
        s.write_text(json.dumps({"model": "tiny", "precision": p, "backend": "hf", "accuracy": acc,
                                 "tasks": {"t1": {"metric": "acc", "value": acc, "stderr": 0.03, "n": 100}}}))
        scores.append(s)
    return quant, inf, scores


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Every precision at every point, fp8's energy counted by a module counter (the others' by the GPU)."""
    tmp = tmp_path_factory.mktemp("open_loop")
    quant, inf, scores = write_serving(tmp)
    out = tmp / "out"
    m = aggregate_inference(inf, quant, scores, out, "bf16", "poisson@4.5")
    q = aggregate_quantize(quant, scores, out, "bf16")
    return out, m, q


def _md_rows(md: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return split[0], split[1:]


def test_fp8_and_int8_rows_sit_between_the_16_bit_ones_and_int4_with_their_set(served) -> None:
    out, _, _ = served
    for stem in ("inference", "quantize"):
        t = pd.read_csv(out / "tables" / f"{stem}.csv")
        assert list(t["precision"]) == ["bf16", "fp8", "int8", "int4"], stem
        assert dict(zip(t["precision"], t["precision_set"])) == {
            "bf16": "paper", "fp8": "beyond_paper", "int8": "beyond_paper", "int4": "paper"}, stem
        heads, rows = _md_rows((out / "tables" / f"{stem}.md").read_text())
        assert heads[:3] == ["Model", "Precision", "Set"], stem
        assert [r[2] for r in rows] == ["paper", "beyond_paper", "beyond_paper", "paper"], stem
        assert "beyond_paper = fp8 and int8" in (out / "tables" / f"{stem}.md").read_text()
    q = pd.read_csv(out / "tables" / "quantize.csv")
    assert dict(zip(q["precision"], q["quant_method"]))["int8"] == "smoothquant_gptq"
    # MCR with the nominal bits of W8A8: 16 / 8 × Perf ratio
    inf = pd.read_csv(out / "tables" / "inference.csv").set_index("precision")
    assert inf.loc["int8", "mcr_nominal"] == pytest.approx(2 * 0.39 / 0.40)


def test_table_9_has_goodput_at_the_table_load_point(served) -> None:
    out, m, _ = served
    t = pd.read_csv(out / "tables" / "inference.csv")
    assert set(t["load_point"]) == {"poisson@4.5"} and m["table_load_point"] == "poisson@4.5"
    assert t["goodput_rps"].tolist() == pytest.approx([1.6] * 4)
    assert t["goodput_frac"].tolist() == pytest.approx([0.84] * 4)
    heads, _ = _md_rows((out / "tables" / "inference.md").read_text())
    assert {"Goodput (req/s)", "Goodput share"} <= set(heads)


def test_the_latency_table_carries_the_open_loop_columns(served) -> None:
    out, _, _ = served
    t = pd.read_csv(out / "tables" / "inference_latency.csv")
    assert len(t) == 4 * len(POINTS)
    bf = t[t["precision"] == "bf16"]
    # the swept rates in rate order (4.5 before 10), after the offline point and the sweep's base point
    assert list(bf["load_point"]) == ["offline", "poisson", "poisson@4.5", "poisson@10"]
    row = bf.set_index("load_point").loc["poisson@10"]
    assert row["load_mode"] == "rate" and row["request_rate_rps"] == 10 and row["arrivals"] == "poisson"
    assert (row["slo_ttft_ms"], row["slo_tpot_ms"]) == (200.0, 50.0)
    assert row["goodput_rps"] == pytest.approx(1.2) and row["goodput_frac"] == pytest.approx(0.39)
    assert row["request_throughput_rps"] == pytest.approx(3.3 * 2)
    assert (row["queue_s_mean"], row["prefill_s_mean"], row["decode_s_mean"]) == pytest.approx((0.11, 0.05, 0.6))
    assert (row["prefill_energy_j_per_token"], row["decode_energy_j_per_token"]) == pytest.approx((0.002, 0.02))
    assert row["kv_cache_dtype"] == "auto" and t[t["precision"] == "fp8"]["kv_cache_dtype"].eq("fp8").all()
    md = (out / "tables" / "inference_latency.md").read_text()
    heads, rows = _md_rows(md)
    for h in ("Mode", "Rate (req/s)", "Arrivals", "SLO TTFT (ms)", "SLO TPOT (ms)", "Req/s", "Goodput (req/s)",
              "Goodput share", "Queue (s)", "Prefill (s)", "Decode (s)", "Prefill energy (J/prompt token)",
              "Decode energy (J/token)", "KV dtype", "Set"):
        assert h in heads, h
    offline = next(r for r in rows if r[:3] == ["tiny", "bf16", "offline"])
    assert offline[heads.index("Goodput (req/s)")].startswith("n/a [")  # with its numbered reason
    assert NO_SLO in md


def test_mixed_energy_scopes_are_flagged_in_the_notes_leaderboard_and_pareto(served) -> None:
    out, m, q = served
    for stem in ("inference", "inference_latency"):
        md = (out / "tables" / f"{stem}.md").read_text()
        assert "Energy scope (what the energy counter covered): gpu: the GPU board" in md, stem
        assert "Energy scope (what the energy counter covered): module: a Grace superchip" in md, stem
        assert "[mixed energy scopes] energy figures of different scopes are compared (gpu, module)" in md, stem
    t = pd.read_csv(out / "tables" / "inference.csv")
    assert dict(zip(t["precision"], t["energy_scope"]))["fp8"] == "module"
    board = (out / "leaderboard" / "inference.md").read_text()
    assert "AEC (W) (mixed energy scopes (gpu, module): not comparable joule for joule)" in board
    assert "(not ranked; scope module)" in board
    group = m["leaderboard_groups"][0]
    assert "aec_w" not in group["metrics_used"] and "aec_w" in group["metrics_excluded"]
    plot = next(p for p in m["plots"] if p["name"] == "inference_accuracy_vs_aec_w")
    assert plot["energy_scopes"] == ["gpu", "module"] and "different scopes" in plot["energy_scope_flag"]
    assert "energy scope: module" in " ".join(pt["text"] for pt in plot["points"]["points"])
    assert not any("energy_scope_flag" in p for p in m["plots"] if p["name"] == "inference_accuracy_vs_amu_gb")
    # the quantize table has no serving energy: its rows carry no scope, so nothing is said or flagged
    assert "mixed energy scopes" not in (out / "tables" / "quantize.md").read_text()


def test_one_scope_is_stated_and_not_flagged(tmp_path: Path) -> None:
    from effbench.aggregate.specs import INFERENCE_LATENCY
    from effbench.aggregate.frame import read_stage_records, stage_rows
    from effbench.aggregate.tables import build_table

    _, inf, _ = write_serving(tmp_path, points=("poisson",), scopes={"fp8": "gpu"}, precisions=("bf16", "fp8"))
    t = build_table(stage_rows(read_stage_records(inf, "inference"), INFERENCE_LATENCY), INFERENCE_LATENCY)
    notes = "\n".join(t.other_notes)
    assert "Energy scope (what the energy counter covered): gpu: the GPU board" in notes
    assert "mixed" not in notes and "module" not in notes


def test_the_rate_sweep_curves_are_drawn_over_the_rate_points(served) -> None:
    out, m, _ = served
    plots = {p["name"]: p for p in m["plots"]}
    for name in (TTFT_PLOT, GOODPUT_PLOT):
        p = plots[name]
        assert (out / p["png"]).is_file() and (out / p["svg"]).is_file()
        assert p["x"] == "request_throughput_rps"
        texts = [pt["text"] for pt in p["points"]["points"]]
        assert len(texts) == 4 * 3  # the rate points only: 4 precisions × (poisson, @4.5, @10), not offline
        assert not any("/offline" in t for t in texts)
        assert any("tiny/int8/poisson@4.5; offered 4.5 req/s (poisson); SLO TTFT 200 ms, TPOT 50 ms" in t
                   for t in texts), texts[:2]
    assert plots[TTFT_PLOT]["y"] == "ttft_s_p90" and plots[GOODPUT_PLOT]["y"] == "goodput_rps"
    assert not any(s["name"] in (TTFT_PLOT, GOODPUT_PLOT) for s in m["skipped"])


def test_no_rate_points_no_sweep_curve(tmp_path: Path) -> None:
    from effbench.aggregate.frame import read_stage_records

    _, inf, _ = write_serving(tmp_path, points=("offline",), precisions=("bf16",))
    drawn, skipped = rate_sweep_plots(read_stage_records(inf, "inference"), tmp_path / "out")
    assert drawn == [] and {s["name"] for s in skipped} == {TTFT_PLOT, GOODPUT_PLOT}
    assert all(s["reason"] == NO_RATE_POINTS for s in skipped)
    assert not (tmp_path / "out" / "plots").exists()
