"""The W8A8 precisions beyond the paper (fp8, int8), from a model's shape alone
(effbench.quantize.families.w8a8_refusal, fp8_refusal, int8_refusal: pure, no torch): per-channel
weights and per-token activations have no groups or blocks, so no layer size is refused (dense,
MLA with its latent kv_b_proj, MoE experts, sizes that are not multiples of 16: measured to quantize
and serve); settings llm-compressor cannot run are refused, with the key to change."""

from __future__ import annotations

import copy

import pytest
from test_mla_moe_families import MLA, MOE, XS

from effbench.quantize.families import export_hf_config, fp8_refusal, int8_refusal, w8a8_refusal

DENSE = export_hf_config(XS)
ODD = {**DENSE, "hidden_size": 264, "intermediate_size": 520, "head_dim": 64}  # no multiple of 16 in sight
FP8 = {"ignore": ["lm_head"]}
INT8 = {"method": "smoothquant_gptq", "smoothing_strength": 0.8, "ignore": ["lm_head"], "dampening_frac": 0.01,
        "calibration": {"samples": 32, "seq_length": 128}}


@pytest.mark.parametrize("config", [DENSE, ODD, MLA, MOE, {**MLA, "kv_lora_rank": 48, "q_lora_rank": 96}],
                         ids=["dense", "odd-sizes", "mla", "moe", "mla-odd-latent"])
@pytest.mark.parametrize("method", ["smoothquant_gptq", "smoothquant_rtn", "gptq", "rtn"])
def test_no_layer_size_is_refused(config, method):
    assert fp8_refusal(config, FP8) is None
    assert int8_refusal(config, {**INT8, "method": method}) is None


def test_cell_settings_or_the_block_alike():
    cell = {"precision": "int8", "weight_bits": 8, "int8": INT8, "fp8": FP8}
    assert int8_refusal(DENSE, cell) is None and fp8_refusal(DENSE, cell) is None
    bad = {**cell, "int8": {**INT8, "method": "awq"}}
    assert int8_refusal(DENSE, bad) == w8a8_refusal(DENSE, "int8", bad["int8"])


@pytest.mark.parametrize("change, says", [
    ({"method": "awq"}, "quantize.int8.method 'awq' is not one of smoothquant_gptq, smoothquant_rtn, gptq, rtn"),
    ({"smoothing_strength": 1.5}, "quantize.int8.smoothing_strength 1.5 is not within [0, 1]"),
    ({"calibration": {"samples": 0, "seq_length": 128}}, "quantize.int8.calibration needs samples >= 1"),
])
def test_settings_llm_compressor_cannot_run_are_refused(change, says):
    assert says in int8_refusal(DENSE, {**INT8, **change})


def test_rtn_needs_neither_calibration_nor_smoothing():
    block = {**INT8, "method": "rtn", "smoothing_strength": None, "calibration": {"samples": 0, "seq_length": 0}}
    assert int8_refusal(DENSE, block) is None
    assert int8_refusal(DENSE, {**block, "method": "gptq"}) is not None  # GPTQ calibrates


def test_an_ignore_that_leaves_nothing_to_quantize():
    everything = {"ignore": ["lm_head", "re:.*proj$"]}
    assert fp8_refusal(DENSE, everything) == (
        "quantize.fp8.ignore leaves no linear layer of this model (dense) to quantize")
    assert fp8_refusal(DENSE, {"ignore": ["lm_head", "re:.*_proj$"]}) is not None
    assert fp8_refusal(MOE, {"ignore": ["re:.*self_attn.*"]}) is None  # the experts are left


def test_pure_and_unchanged_inputs():
    before = copy.deepcopy(INT8)
    int8_refusal(MOE, INT8)
    assert INT8 == before
    with pytest.raises(ValueError):
        w8a8_refusal(DENSE, "int4", INT8)
