"""The headline findings (effbench.report.findings) on hand-made aggregated tables: for each of the
paper's claims, a table where the run agrees, one where it disagrees, one where the difference is
inside the intervals (a tie, never a rank) and one where the claim cannot be measured."""

from __future__ import annotations

import pandas as pd
import pytest

from effbench.report.findings import (
    AGREES,
    DISAGREES,
    NOT_MEASURABLE,
    TIE,
    Est,
    compare,
    dora_adds_latency,
    findings,
    int4_cuts,
    mla_lowest_perplexity,
    moe_costs_memory,
    mqa_memory_latency,
    rslora_large_only,
)


def fig(v: float, h: float | None = 0.1) -> dict[str, float | None]:
    """A figure as the aggregated CSV holds it: value and its 95 % interval (h: half-width)."""
    return {"v": v, "lo": None if h is None else v - h, "hi": None if h is None else v + h}


def row(keys: dict[str, object], **figs: dict[str, float | None]) -> dict[str, object]:
    out: dict[str, object] = {**keys, "status": "ok"}
    out["cell"] = "/".join(str(v) for v in keys.values())
    for col, f in figs.items():
        out[col], out[col + "__ci_low"], out[col + "__ci_high"] = f["v"], f["lo"], f["hi"]
    return out


def pretrain(**techs: dict[str, dict[str, float | None]]) -> pd.DataFrame:
    return pd.DataFrame([row({"size": "xs", "technique": t}, **f) for t, f in techs.items()])


def test_compare_ranks_only_beyond_the_intervals() -> None:
    assert compare(Est(1.0, 0.9, 1.1), Est(2.0, 1.9, 2.1)) == -1
    assert compare(Est(2.0, 1.9, 2.1), Est(1.0, 0.9, 1.1)) == 1
    assert compare(Est(1.0, 0.5, 1.5), Est(1.2, 0.7, 1.7)) == 0  # overlapping: a tie
    assert compare(Est(1.0), Est(5.0, 4.9, 5.1)) == 0  # no interval: the noise is unknown


# --- MQA: memory-latency trade-off ----------------------------------------------------------------


@pytest.mark.parametrize(("mqa", "verdict"), [
    ({"amu_gb": fig(10), "al_s_per_iter": fig(1.0)}, AGREES),  # better on both than gqa
    ({"amu_gb": fig(30), "al_s_per_iter": fig(3.0)}, DISAGREES),  # worse on both
    ({"amu_gb": fig(20, 5), "al_s_per_iter": fig(2.0, 0.5)}, TIE),  # inside the intervals
])
def test_mqa_tradeoff(mqa: dict, verdict: str) -> None:
    f = mqa_memory_latency(pretrain(mqa=mqa, gqa={"amu_gb": fig(20), "al_s_per_iter": fig(2.0)}))
    assert f.verdict == verdict, f.evidence
    assert ("pretrain", "xs/mqa") in f.rows and ("pretrain", "xs/gqa") in f.rows
    assert "[" in f.evidence[0]  # the intervals are stated


def test_mqa_tradeoff_not_measurable_without_mqa() -> None:
    assert mqa_memory_latency(pretrain(gqa={"amu_gb": fig(20), "al_s_per_iter": fig(2.0)})).verdict == NOT_MEASURABLE
    assert mqa_memory_latency(None).verdict == NOT_MEASURABLE


# --- MLA: lowest perplexity ------------------------------------------------------------------------


@pytest.mark.parametrize(("mla", "verdict"), [(fig(7.0), AGREES), (fig(9.0), DISAGREES), (fig(8.05), TIE),
                                              (fig(7.0, None), TIE)])
def test_mla_lowest_perplexity(mla: dict, verdict: str) -> None:
    f = mla_lowest_perplexity(pretrain(mla={"ppl": mla}, gqa={"ppl": fig(8.0)}, mqa={"ppl": fig(8.2)}))
    assert f.verdict == verdict, f.evidence


def test_mla_not_measurable_when_its_run_failed() -> None:
    df = pretrain(mla={"ppl": fig(7.0)}, gqa={"ppl": fig(8.0)})
    df.loc[df["technique"] == "mla", "status"] = "oom"
    f = mla_lowest_perplexity(df)
    assert f.verdict == NOT_MEASURABLE and f.rows == []


# --- MoE: costs memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(("moe", "verdict"), [(fig(60), AGREES), (fig(30), DISAGREES), (fig(45, 10), TIE)])
def test_moe_costs_memory(moe: dict, verdict: str) -> None:
    f = moe_costs_memory(pretrain(moe={"amu_gb": moe}, gqa={"amu_gb": fig(44)}, mqa={"amu_gb": fig(42)}))
    assert f.verdict == verdict, f.evidence


def test_moe_not_measurable_without_moe() -> None:
    assert moe_costs_memory(pretrain(gqa={"amu_gb": fig(44)})).verdict == NOT_MEASURABLE


# --- int4: memory/energy cut at a small accuracy drop ----------------------------------------------


def serving(int4: dict, drop: dict | None) -> pd.DataFrame:
    base = row({"model": "m", "precision": "bf16"}, amu_gb=fig(40), energy_j_per_token=fig(1.0, 0.05))
    base["quality_vs_baseline"] = "baseline"
    q = row({"model": "m", "precision": "int4"}, **int4, **({"accuracy_drop": drop} if drop else {}))
    q["quality_vs_baseline"] = "not significant"
    return pd.DataFrame([base, q])


@pytest.mark.parametrize(("int4", "drop", "verdict"), [
    ({"amu_gb": fig(12), "energy_j_per_token": fig(0.4, 0.05)}, fig(0.03, 0.01), AGREES),
    ({"amu_gb": fig(12), "energy_j_per_token": fig(0.4, 0.05)}, fig(0.20, 0.02), DISAGREES),  # drop beyond 5 %
    ({"amu_gb": fig(60), "energy_j_per_token": fig(1.0, 0.05)}, fig(0.0, 0.01), DISAGREES),  # int4 uses more
    ({"amu_gb": fig(40, 5), "energy_j_per_token": fig(1.0, 0.3)}, fig(0.0, 0.01), TIE),  # inside the noise
])
def test_int4_cuts(int4: dict, drop: dict, verdict: str) -> None:
    f = int4_cuts(serving(int4, drop))
    assert f.verdict == verdict, f.evidence
    assert f.rows == [("inference", "m/bf16"), ("inference", "m/int4")]
    assert "memory ×" in f.evidence[0] and "accuracy drop" in f.evidence[0]


def test_int4_not_measurable_without_an_int4_row() -> None:
    df = serving({"amu_gb": fig(12)}, None)
    assert int4_cuts(df[df["precision"] != "int4"]).verdict == NOT_MEASURABLE
    assert int4_cuts(None).verdict == NOT_MEASURABLE


# --- RSLoRA vs LoRA by size; DoRA's latency ---------------------------------------------------------


def finetune(params: float, **methods: dict) -> pd.DataFrame:
    rows = [row({"model": "m", "task": "t", "method": k}, **f) for k, f in methods.items()]
    for r in rows:
        r["params_total"] = params
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("params", "rslora", "verdict"), [
    (1e9, fig(3.5), AGREES),  # small: no better than LoRA, as the paper says
    (1e9, fig(1.0), DISAGREES),  # small: RSLoRA beats LoRA
    (2e10, fig(1.0), AGREES),  # large: beats
    (2e10, fig(2.95, 0.2), TIE),  # large: inside the noise
])
def test_rslora_large_only(params: float, rslora: dict, verdict: str) -> None:
    f = rslora_large_only(finetune(params, rslora={"val_loss": rslora}, lora={"val_loss": fig(3.0)}))
    assert f.verdict == verdict, f.evidence
    assert ("only the 'not at small sizes' half" in f.summary) == (params < 1e10)


def test_rslora_not_measurable_without_lora() -> None:
    assert rslora_large_only(finetune(1e9, rslora={"val_loss": fig(1.0)})).verdict == NOT_MEASURABLE


@pytest.mark.parametrize(("dora", "verdict"), [(fig(2.0), AGREES), (fig(0.5), DISAGREES), (fig(1.05), TIE)])
def test_dora_adds_latency(dora: dict, verdict: str) -> None:
    f = dora_adds_latency(finetune(1e9, dora={"al_s_per_iter": dora}, lora={"al_s_per_iter": fig(1.0)}))
    assert f.verdict == verdict, f.evidence


def test_dora_not_measurable_without_dora() -> None:
    assert dora_adds_latency(finetune(1e9, lora={"al_s_per_iter": fig(1.0)})).verdict == NOT_MEASURABLE


def test_every_claim_is_judged_and_missing_tables_are_not_measurable() -> None:
    out = findings({"pretrain": pretrain(mla={"ppl": fig(7.0)}, gqa={"ppl": fig(8.0)})})
    assert len(out) == 6
    assert [f.verdict for f in out] == [NOT_MEASURABLE, AGREES, *[NOT_MEASURABLE] * 4]
