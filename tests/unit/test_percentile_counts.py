"""A serving percentile is printed only where enough values were pooled for it (docs/noise.md):
at least ``spread.requests_for_percentile(q)`` (5 of them beyond the percentile: p50 10, p90 50,
p99 500) over every repeat of the load point. Below that the figure is missing, with a reason that
names the count it had and the count it needs; the means stay, and the tables print the missing
percentile as n/a with that reason in a note."""

from __future__ import annotations

import pytest

from effbench.inference.latency import METRICS, RequestTrace, latency_figures
from effbench.measure import spread


def repeats(requests: int, n_repeats: int, tokens: int = 4) -> list[list[RequestTrace]]:
    """``n_repeats`` repeats of ``requests`` requests; request i's first token after 10 + i ms, then
    one every 2 ms (``tokens`` tokens: tokens − 1 gaps per request for ITL)."""
    return [[RequestTrace(0.0, [(10 + i + r + 2 * k) / 1000 for k in range(tokens)]) for i in range(requests)]
            for r in range(n_repeats)]


def test_the_rule_needs_five_values_beyond_the_percentile():
    assert [spread.requests_for_percentile(q) for q in (50, 90, 99)] == [10, 50, 500]
    assert spread.requests_for_percentile(10) == spread.requests_for_percentile(90)  # the lower tail alike


def test_c1_four_requests_by_two_repeats_prints_means_but_no_percentiles():
    """4 requests × 2 repeats: 8 requests pooled, short of p90's 50 and p99's 500 and also of p50's 10
    (8 requests leave 4 above their median). ITL pools 3 gaps a request: 24, enough for its p50 only.
    Every mean and AL stay, with their intervals over the repeats."""
    f = latency_figures(repeats(4, 2), "test")
    for metric in ("ttft", "tpot", "e2e"):
        for st, need in (("p50", 10), ("p90", 50), ("p99", 500)):
            fig = f[f"{metric}_s_{st}"]
            assert fig.value is None and fig.interval is None, (metric, st)
            assert fig.missing_reason == (f"{st} needs {need} requests (5 beyond it, docs/noise.md), "
                                          f"had 8 (4 a repeat × 2 repeats)"), (metric, st)
        assert f[f"{metric}_s_mean"].value is not None and f[f"{metric}_s_mean"].interval is not None
    assert f["itl_s_p50"].value is not None and f["itl_s_p99"].missing_reason.startswith("p99 needs 500 token gaps")
    assert f["itl_s_p90"].missing_reason == "p90 needs 50 token gaps (5 beyond it, docs/noise.md), had 24 " \
                                            "(12 a repeat × 2 repeats)"
    assert f["al_s_per_request"].value == pytest.approx(f["e2e_s_mean"].value)


def test_the_default_c1_point_prints_p50_and_not_p90():
    """The embedded default's c1: 4 requests × 5 repeats = 20 pooled: p50 (10) is printed with its
    interval, p90 (50) and p99 (500) are not; ITL's 20 × 31 = 620 gaps carry all three."""
    f = latency_figures(repeats(4, 5, tokens=32), "test")
    for metric in ("ttft", "tpot", "e2e"):
        assert f[f"{metric}_s_p50"].value is not None and f[f"{metric}_s_p50"].interval is not None
        assert "had 20 (4 a repeat × 5 repeats)" in f[f"{metric}_s_p90"].missing_reason
        assert f[f"{metric}_s_p90"].missing_reason.startswith("p90 needs 50 requests")
        assert f[f"{metric}_s_p99"].missing_reason.startswith("p99 needs 500 requests")
    for st in ("mean", "p50", "p90", "p99"):
        assert f[f"itl_s_{st}"].value is not None, st


def test_enough_requests_print_p90_but_not_p99():
    """30 requests × 2 repeats = 60 pooled: p50 (10) and p90 (50) are printed with intervals that hold
    them, p99 (500) is not; ITL pools 180 gaps: p90 printed, p99 not."""
    f = latency_figures(repeats(30, 2), "test")
    for metric in METRICS:
        for st in ("mean", "p50", "p90"):
            fig = f[f"{metric}_s_{st}"]
            assert fig.value is not None and fig.interval is not None, (metric, st)
            assert fig.interval.low <= fig.value <= fig.interval.high
    for metric in ("ttft", "tpot", "e2e"):
        assert f[f"{metric}_s_p99"].missing_reason == ("p99 needs 500 requests (5 beyond it, docs/noise.md), "
                                                       "had 60 (30 a repeat × 2 repeats)")
    assert f["itl_s_p99"].missing_reason.startswith("p99 needs 500 token gaps")


def test_one_repeat_is_counted_alike():
    f = latency_figures(repeats(12, 1), "test")
    assert f["ttft_s_p50"].value is not None and f["ttft_s_p50"].interval is None  # one repeat: no interval
    assert f["ttft_s_p90"].missing_reason == "p90 needs 50 requests (5 beyond it, docs/noise.md), had 12 (one repeat)"


def test_the_latency_table_prints_a_missing_percentile_as_na_with_its_reason(tmp_path):
    """The c1 point's figures through a record, the aggregator's rows and the latency table:
    p90 prints n/a with a note giving the counts, p50 and the mean print as numbers."""
    from datetime import datetime, timedelta, timezone

    from effbench.aggregate.frame import read_stage_records, stage_rows
    from effbench.aggregate.specs import INFERENCE_LATENCY
    from effbench.aggregate.tables import build_table, render_markdown
    from effbench.record import write_record

    t0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    base = {"run_id": "x", "status": "ok", "settings_json": "{}", "settings_hash": "h", "config_hash": "c",
            "code_version": "git:t", "library_versions_json": "{}", "host": "devbox", "device_kind": "cpu",
            "device_name": "Test CPU", "device_count": 1, "seed": 1, "started_at": t0, "ended_at": t0 + timedelta(1)}
    path = tmp_path / "inference" / "tiny" / "bf16" / "c1" / "record.parquet"
    write_record(path, {**base, "stage": "inference", "cell": "tiny/bf16/c1", "model": "tiny", "precision": "bf16",
                        "load_point": "c1", "params_total": 1000, "seconds": 2.0,
                        **latency_figures(repeats(4, 5, tokens=32), "test")})
    df = stage_rows(read_stage_records([path], "inference"), INFERENCE_LATENCY)
    row = df.iloc[0]
    assert row["ttft_s_p90__missing"].startswith("p90 needs 50 requests") and row["ttft_s_p50"] > 0
    t = build_table(df, INFERENCE_LATENCY)
    cells = dict(zip(t.headers, t.rows[0]))
    assert cells["TTFT p90 (s)"] == cells["E2E p99 (s)"] == "n/a"
    assert cells["TTFT p50 (s)"] not in ("n/a", "", "0") and cells["TTFT mean (s)"] not in ("n/a", "", "0")
    md = render_markdown(t)
    assert "n/a: p90 needs 50 requests (5 beyond it, docs/noise.md), had 20 (4 a repeat × 5 repeats)" in md
    assert "n/a: p99 needs 500 requests" in md
