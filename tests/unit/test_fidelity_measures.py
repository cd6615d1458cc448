"""The fidelity figures (effbench.fidelity.measures) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effbench.fidelity.measures import fidelity, kl_per_position, log_softmax, perplexity, top1_agreement

L = np.log


def test_perplexity_is_exp_of_mean_nll():
    # Targets get probability 1/2 and 1/4: mean NLL = (ln 2 + ln 4) / 2 = 1.5 ln 2 -> ppl = 2^1.5.
    logp = L(np.array([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]))
    assert perplexity(logp, np.array([0, 1])) == pytest.approx(2 ** 1.5)


def test_kl_by_hand_and_zero_for_identical():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3)
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert kl_per_position(L(p), L(q)) == pytest.approx([expected, 0.0], abs=1e-12)
    assert kl_per_position(L(q), L(p))[0] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))


def test_kl_ignores_tokens_the_baseline_rules_out():
    p = np.array([[1.0, 0.0]])
    q = np.array([[0.5, 0.5]])
    with np.errstate(divide="ignore"):
        assert kl_per_position(L(p), L(q)) == pytest.approx([math.log(2)])


def test_top1_agreement_and_summary():
    p = L(np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5 - 1e-9]]))
    q = L(np.array([[0.7, 0.3], [0.6, 0.4], [0.4, 0.6]]))
    assert top1_agreement(p, q) == pytest.approx(1 / 3)
    f = fidelity(p, q, np.array([0, 1, 0]))
    kl = kl_per_position(p, q)
    assert f["kl_mean"] == pytest.approx(kl.mean())
    assert f["kl_p99"] == pytest.approx(np.percentile(kl, 99)) and f["kl_p99"] <= kl.max()
    assert f["ppl"] == pytest.approx(math.exp(-(math.log(0.7) + math.log(0.4) + math.log(0.4)) / 3))
    assert f["positions"] == 3


def test_log_softmax_is_stable_and_normalised():
    x = np.array([[1000.0, 1000.0, -1000.0]])
    assert np.exp(log_softmax(x)).sum() == pytest.approx(1.0)
    assert log_softmax(x)[0, 0] == pytest.approx(math.log(0.5))


def test_a_truncated_top_k_distribution_is_refused():
    top2 = L(np.array([[0.5, 0.3]]))  # a top-k slice misses mass: KL from it would be wrong
    with pytest.raises(ValueError, match="truncated"):
        kl_per_position(top2, top2)


def test_passes_needs_both_agreement_and_kl_within_the_thresholds():
    from effbench.fidelity.measures import THRESHOLDS, passes

    ok = {"top1_agreement": THRESHOLDS["top1_agreement_min"], "kl_mean": THRESHOLDS["kl_mean_max"]}
    assert passes(ok)
    assert not passes({**ok, "top1_agreement": 0.5})
    assert not passes({**ok, "kl_mean": 1.0})
