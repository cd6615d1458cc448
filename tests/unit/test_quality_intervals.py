"""Validation loss, PPL and the fine-tuning held-out loss carry 95 % intervals over their evaluation
batches (docs/noise.md), built by hand here from made-up batch losses; `recommend` and the
leaderboard then read them as noise instead of treating quality as exact."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from effbench.aggregate.leaderboard import compute_leaderboard
from effbench.aggregate.specs import PRETRAIN
from effbench.decision.constraints import Constraints
from effbench.decision.frames import Frames
from effbench.decision.recommend import recommend
from effbench.decision.recommend_render import render_markdown
from effbench.finetune.heldout import EvalBatch, batch_weights, held_out_loss
from effbench.measure.spread import eval_batches_interval, exp_interval, mean_interval, t95
from effbench.pretrain.evaluate import Validation


def test_equal_batches_give_the_t_interval_of_the_batch_means() -> None:
    # four batches of 512 tokens: mean 2.3, sd sqrt(0.2 / 3), t(0.975, 3) = 3.182446
    v, iv = eval_batches_interval([2.0, 2.2, 2.4, 2.6], [512.0] * 4)
    half = 3.182446305284263 * math.sqrt(0.2 / 3) / 2
    assert v == pytest.approx(2.3)
    assert (iv.low, iv.high) == pytest.approx((2.3 - half, 2.3 + half), rel=1e-9)
    assert iv.n == 4 and iv.method == "t_eval_batches"
    _, same = mean_interval([2.0, 2.2, 2.4, 2.6])
    assert (same.low, same.high) == pytest.approx((iv.low, iv.high), rel=1e-12)


def test_a_short_last_batch_counts_for_its_tokens_and_a_loss_is_cut_at_zero() -> None:
    # NLL 2.0 over 1024 tokens and 3.0 over 512: the token mean is 7/3; the ratio estimator's SE is
    # sqrt(((2048 − 7/3·1024)² + (1536 − 7/3·512)²) / 2) / 768 = 4/9, t(0.975, 1) = 12.706
    v, iv = eval_batches_interval([2.0, 3.0], [1024.0, 512.0])
    assert v == pytest.approx(7 / 3)
    assert iv.high == pytest.approx(7 / 3 + t95(1) * 4 / 9, rel=1e-9) and iv.low == 0.0  # 7/3 − 5.65 < 0: cut
    assert exp_interval(iv).low == 1.0 and exp_interval(iv).high == pytest.approx(math.exp(iv.high))


def test_pretraining_val_loss_and_ppl_figures() -> None:
    cols = {}
    for name, fig in Validation([2.0, 2.2, 2.4, 2.6], [512] * 4).figures().items():
        cols.update(fig.columns(name))
    half = 3.182446305284263 * math.sqrt(0.2 / 3) / 2
    assert cols["val_loss"] == pytest.approx(2.3) and cols["val_loss__source"] == "validation_mean_nll"
    assert (cols["val_loss__ci_low"], cols["val_loss__ci_high"]) == pytest.approx((2.3 - half, 2.3 + half))
    assert cols["val_loss__ci_n"] == 4 and cols["val_loss__ci_method"] == "t_eval_batches"
    # PPL = exp(mean NLL): exp is increasing, so its interval is exp of the loss interval's ends
    assert cols["ppl"] == pytest.approx(math.exp(2.3))
    assert cols["ppl__ci_low"] == pytest.approx(math.exp(cols["val_loss__ci_low"]), rel=1e-12)
    assert cols["ppl__ci_high"] == pytest.approx(math.exp(cols["val_loss__ci_high"]), rel=1e-12)
    assert cols["ppl__ci_n"] == 4 and cols["ppl__ci_method"] == "exp(t_eval_batches)"
    one = Validation([2.5], [512]).figures()  # one batch: no replicate, no interval
    assert one["val_loss"].value == 2.5 and one["val_loss"].interval is None and one["ppl"].interval is None


def test_fine_tuning_held_out_loss_interval() -> None:
    # one process: (mean token loss, samples, tokens, None); the Trainer repeats each batch's loss
    # eval_batch_size (8) times, the short last batch's too: eval_loss is the plain mean of the batches
    batches = [[EvalBatch(1.0, 8, 300, None), EvalBatch(1.2, 8, 280, None), EvalBatch(1.4, 4, 150, None)]]
    eval_loss = (8 * 1.0 + 8 * 1.2 + 8 * 1.4) / 24  # what the Trainer reports
    fig = held_out_loss(eval_loss, batches)
    v, iv = eval_batches_interval([1.0, 1.2, 1.4], [1.0, 1.0, 1.0])
    assert fig.value == eval_loss and fig.source == "llamafactory_eval_loss" and v == pytest.approx(eval_loss)
    assert (fig.interval.low, fig.interval.high) == pytest.approx((iv.low, iv.high), rel=1e-12)
    assert fig.interval.n == 3 and fig.interval.method == "t_eval_batches"
    assert held_out_loss(eval_loss + 0.05, batches).interval is None  # the batches are not that figure's
    assert held_out_loss((8 * 1.0 + 8 * 1.2 + 4 * 1.4) / 20, batches).interval is None  # sample-weighted: not it
    assert held_out_loss(1.1, [[EvalBatch(1.1, 8, 300, None)]]).interval is None  # one batch
    assert held_out_loss(None, [[]]).missing_reason is not None


def test_two_ranks_averaging_tokens_weigh_each_step_by_its_token_mean() -> None:
    # Two ranks, two steps of 4 samples a rank; the Trainer divided each rank's summed loss by the
    # step's tokens on both ranks (G) and multiplied it by 2: rank r's value in step s is 2·S_rs/G_s.
    sums = {(0, 0): 300.0, (1, 0): 100.0, (0, 1): 240.0, (1, 1): 200.0}  # Σ NLL
    toks = {(0, 0): 200, (1, 0): 100, (0, 1): 160, (1, 1): 160}
    g = {s: toks[0, s] + toks[1, s] for s in (0, 1)}
    trainer = sum(4 * 2 * sums[r, s] / g[s] for r in (0, 1) for s in (0, 1)) / 16
    per_rank = [[EvalBatch(sums[r, s] / toks[r, s], 4, toks[r, s], g[s]) for s in (0, 1)] for r in (0, 1)]
    weighted = batch_weights(per_rank)
    # each step counts as the token mean of both ranks
    assert [w for _, w in weighted] == pytest.approx([200 / 300, 160 / 320, 100 / 300, 160 / 320])
    fig = held_out_loss(trainer, per_rank)
    assert fig.interval is not None and fig.interval.n == 4
    assert sum(x * w for x, w in weighted) / sum(w for _, w in weighted) == pytest.approx(trainer)


def _pre(tech: str, nll: list[float]) -> dict:
    row = {"cell": f"xs/{tech}", "size": "xs", "technique": tech, "status": "ok", "params_total": 7e6,
           "peak_mem_gb": 1.0}
    for name, fig in Validation(nll, [1024] * len(nll)).figures().items():
        row.update(fig.columns(name))
    return row


def _ft(method: str, batches: list[tuple[float, int]]) -> dict:
    loss = sum(x for x, _ in batches) / len(batches)  # the Trainer's eval_loss: the plain mean of the batches
    seen = [[EvalBatch(x, n, 40 * n, None) for x, n in batches]]
    return {"cell": f"xs-gqa/t/{method}", "model": "xs-gqa", "task": "t", "method": method, "status": "ok",
            "pretrained": "xs/gqa", "params_total": 7e6, "peak_mem_gb": 1.0,
            **held_out_loss(loss, seen).columns("val_loss")}


def test_recommend_reads_the_quality_noise_and_the_leaderboard_ties_within_it() -> None:
    pre = [_pre("mha", [2.30, 2.32, 2.28, 2.31]), _pre("gqa", [2.31, 2.33, 2.29, 2.30]),
           _pre("mqa", [2.90, 2.92, 2.88, 2.91])]
    ft = [_ft("lora", [(1.00, 8), (1.04, 8), (0.98, 4)]), _ft("full", [(1.50, 8), (1.55, 8), (1.45, 4)])]
    frames = Frames(pd.DataFrame(pre), pd.DataFrame(ft), pd.DataFrame(), Path("results"), "bf16", "offline")
    answer = recommend(frames, Constraints())
    steps = {s["step"]: s for s in answer["steps"]}
    arch, tune = steps["architecture"], steps["fine-tuning"]
    assert arch["choice"]["candidate"] == "mha" and arch["tied_with"] == ["gqa"]  # within the PPL noise
    for s in (arch, tune):
        assert not s["margin"]["noise"].startswith("unknown") and s["margin"]["significant"] is not None
        assert "noise unknown" not in s["verdict"]
    assert tune["choice"]["candidate"] == "lora" and tune["margin"]["significant"] is True
    assert arch["choice"]["objective"]["ci_method"] == "exp(t_eval_batches)"
    assert "noise unknown" not in render_markdown(answer)
    # the pretraining leaderboard: PPL has noise, and mha and gqa tie on it
    others = {"amu_gb": 1.0, "al_s_per_iter": 0.1, "tt_tokens_per_param_s": 1e-3, "aec_w": 10.0}  # no interval
    board = compute_leaderboard(pd.DataFrame([{**r, **others} for r in pre]), PRETRAIN)
    (group,) = board.groups
    assert "ppl" not in group.noise_unknown
    ranks = dict(zip(group.rows["technique"], group.rows["ppl__rank"]))
    assert ranks == {"mha": 1, "gqa": 1, "mqa": 3}
