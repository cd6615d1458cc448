"""Self-check of tests/record_consistency.py: a hand-computed record passes, and each defect the
checks exist for (MFU times the world size, energy as 0, a window outside its job, a wrong
throughput or trainable count, an interval that misses its own value or reaches below zero) fails."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
import record_consistency as rc

T0 = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.timezone.utc)
PEAK = 5e10


def pretrain(**edits):  # type: ignore[no-untyped-def]
    # 4 steps of 2048 tokens in 2 s of busy time (AL 0.5 s), a 2.5 s window in a 10 s job, 2 ranks
    r = {"cell": "xs/gqa", "stage": "pretrain", "status": "ok", "status_detail": None, "run_id": "x",
         "started_at": T0, "ended_at": T0 + dt.timedelta(seconds=10), "seconds": 2.5,
         "steps": 4, "al_s_per_iter": 0.5, "tokens": 8192, "samples": 64, "params_total": 1000,
         "tt_tokens_per_param_s": 8192 / 1000 / 2.0, "tokens_per_s": 8192 / 2.0,
         "energy_j": 50.0, "energy_j__missing": None, "aec_w": 20.0, "aec_w__missing": None,
         "energy_j_per_token": 50.0 / 8192, "energy_j_per_token__missing": None,
         "flops_per_token": 1e6, "mfu_frac": 1e6 * 8192 / (2.0 * PEAK * 2), "mfu_frac__missing": None,
         "parallel_json": json.dumps({"world_size": 2}),
         "settings_json": json.dumps({"training": {"precision": "fp32"}, "measure": {"peak_flops": {"fp32": PEAK}}})}
    r.update(edits)
    return r


def test_a_consistent_record_passes():
    rc.check_record(pretrain())
    rc.check_mfu(pretrain(), PEAK)


@pytest.mark.parametrize("edit, message", [
    ({"mfu_frac": 1e6 * 8192 / (2.0 * PEAK)}, "MFU over 2 device"),  # one device's peak: twice the MFU
    ({"tt_tokens_per_param_s": 8192 / 1000 / 2.5}, "TT"),  # over the window, not the busy time
    ({"tokens_per_s": 8192 / 2.5}, "tokens/s"),
    ({"aec_w": 50.0 / 2.0}, "AEC"),
    ({"energy_j_per_token": 50.0 / 64}, "energy_j_per_token"),  # per sample
    ({"energy_j": None, "energy_j__missing": "no counter", "aec_w": 0.0}, "aec_w should be missing"),
    ({"seconds": 11.0}, "window"),  # longer than its job
    ({"al_s_per_iter": 0.7}, "busy"),  # steps that do not fit in the window
])
def test_each_broken_relation_fails(edit, message):
    with pytest.raises(AssertionError, match=message):
        rc.check_record(pretrain(**edit))


def test_samples_outside_the_job_fail(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "samples.parquet"
    pq.write_table(pa.table({"run_id": ["x", "x"], "wall_time": [T0.timestamp() + 1, T0.timestamp() + 9]}), path)
    rc.check_window(pretrain(), path)
    pq.write_table(pa.table({"run_id": ["x"], "wall_time": [T0.timestamp() - 1]}), path)
    with pytest.raises(AssertionError, match="outside the job"):
        rc.check_window(pretrain(), path)


def serving(**edits):  # type: ignore[no-untyped-def]
    # 4 requests × 8 tokens, concurrency 2: TTFT 0.1 s, TPOT 0.02 s, E2E 0.24 s; repeats that took 0.5 s in all
    r = {"cell": "tiny/bf16/c2", "stage": "inference", "status": "ok", "status_detail": None, "run_id": "x",
         "started_at": T0, "ended_at": T0 + dt.timedelta(seconds=10), "seconds": 1.0,
         "output_len": 8, "samples": 4, "tokens": 32, "concurrency": 2,
         "ttft_s_mean": 0.1, "tpot_s_mean": 0.02, "itl_s_mean": 0.02, "al_s_per_request": 0.24,
         "it_tokens_per_s": 32 / 0.5, "energy_j": None, "energy_j__missing": "no counter",
         "aec_w": None, "aec_w__missing": "no counter", "energy_j_per_token": None,
         "energy_j_per_token__missing": "no counter"}
    r.update(edits)
    return r


@pytest.mark.parametrize("edit, message", [
    ({}, None),
    ({"al_s_per_request": 0.3}, "AL = TTFT"),
    ({"itl_s_mean": 0.03}, "mean ITL"),
    ({"it_tokens_per_s": 32 / 0.2}, "IT"),  # faster than 2 requests in flight allow
    ({"it_tokens_per_s": 32 / 2.0}, "IT"),  # slower than the window allows
    ({"tokens": 30}, "tokens"),
])
def test_serving_relations(edit, message):
    if message is None:
        rc.check_record(serving())
        return
    with pytest.raises(AssertionError, match=message):
        rc.check_record(serving(**edit))


LLAMA = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "vocab_size": 512, "tie_word_embeddings": True}


def test_analytic_trainable_counts():
    # one layer: q 64→64, k, v 64→32, o 64→64, gate, up 64→128, down 128→64
    lora_layer = 4 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 2 * (64 + 128) + (128 + 64))
    lora = {"finetuning_type": "lora", "lora_rank": 4, "lora_target": "all"}
    assert rc.expected_trainable(LLAMA, lora) == 2 * lora_layer
    assert rc.expected_trainable(LLAMA, {**lora, "use_dora": True}) == 2 * (lora_layer + 64 + 32 + 32 + 64 + 128 * 2 + 64)
    layer = 64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3 + 2 * 64
    assert rc.expected_trainable(LLAMA, {"finetuning_type": "freeze", "freeze_trainable_layers": 1}) == layer
    assert rc.model_params(LLAMA) == 512 * 64 + 2 * layer + 64
    r = {"cell": "c", "params_trainable": 2 * lora_layer, "params_total": rc.model_params(LLAMA) + 2 * lora_layer}
    rc.check_trainable(r, LLAMA, lora)
    with pytest.raises(AssertionError, match="trainable"):
        rc.check_trainable({**r, "params_trainable": 2 * lora_layer + 1}, LLAMA, lora)


# --- intervals ---------------------------------------------------------------------------------


def with_interval(r, key, low, high):  # type: ignore[no-untyped-def]
    return {**r, key + "__ci_low": low, key + "__ci_high": high}


def test_intervals_that_contain_their_value_pass():
    r = with_interval(serving(ttft_s_p99=0.3), "ttft_s_p99", 0.2, 0.5)
    r = with_interval(r, "al_s_per_request", 0.0, 0.5)  # touching 0 is allowed
    r = with_interval(r, "it_tokens_per_s", 64.0 * (1 + 1e-12), 70.0)  # the value, to float rounding
    r = {**r, "mem_runtime_gb": -0.01, **{"mem_runtime_gb__ci_low": -0.02, "mem_runtime_gb__ci_high": 0.0}}
    r = {**r, "amu_gb": 1.0, "amu_gb__ci_low": None, "amu_gb__ci_high": None}  # no interval: nothing to check
    rc.check_record(r)
    rc.check_intervals({"cell": "t", "accuracy": 0.4, "accuracy__ci_low": float("nan"), "accuracy__ci_high": float("nan")})


@pytest.mark.parametrize("key, value, low, high, message", [
    # A t interval over 2 repeats' p99 (12.7 × sd / √2) reaching below 0 s.
    ("ttft_s_p99", 0.3, -0.9, 1.5, "ttft_s_p99 cannot be negative"),
    # A pooled p99 with an interval sized (and centred) from the per-repeat p99s, not around it.
    ("e2e_s_p99", 0.9, 0.5, 0.8, "e2e_s_p99 = 0.9 outside"),
    ("energy_j", 40.0, -3.0, 83.0, "energy_j cannot be negative"),
    ("amu_gb", 0.6, -0.016, 1.216, "amu_gb cannot be negative"),
    ("it_tokens_per_s", 64.0, 64.1, 70.0, "outside"),
])
def test_an_interval_off_its_value_or_below_zero_fails(key, value, low, high, message):
    with pytest.raises(AssertionError, match=message):
        rc.check_record(with_interval(serving(**{key: value}), key, low, high))


def test_half_an_interval_or_an_interval_without_a_value_fails():
    with pytest.raises(AssertionError, match="half an interval"):
        rc.check_intervals(with_interval(serving(), "al_s_per_request", 0.1, None))
    with pytest.raises(AssertionError, match="null but has an interval"):
        rc.check_intervals(with_interval(serving(), "energy_j", 1.0, 2.0))


def test_mcr_interval_on_the_inverted_bit_ratio_fails():
    """MCR int4 vs bf16 = 16/4 × 0.36/0.40 = 3.6; its delta-method interval scales the accuracy
    ratio's by the same 16/4. Built on 4/16 instead it sits around 0.225 and misses 3.6."""
    acc_q, acc_b, se = 0.36, 0.40, 0.03
    ratio_se = acc_q / acc_b * math.sqrt((se / acc_q) ** 2 + (se / acc_b) ** 2)
    row = {"cell": "tiny/int4", "mcr_nominal": 16 / 4 * acc_q / acc_b}
    good = {**row, "mcr_nominal__ci_low": 4 * (acc_q / acc_b - 1.96 * ratio_se),
            "mcr_nominal__ci_high": 4 * (acc_q / acc_b + 1.96 * ratio_se)}
    rc.check_intervals(good)
    bad = {**row, "mcr_nominal__ci_low": 0.25 * (acc_q / acc_b - 1.96 * ratio_se),
           "mcr_nominal__ci_high": 0.25 * (acc_q / acc_b + 1.96 * ratio_se)}
    with pytest.raises(AssertionError, match=r"mcr_nominal = 3\.(6|59+\d*) outside"):
        rc.check_intervals(bad)
