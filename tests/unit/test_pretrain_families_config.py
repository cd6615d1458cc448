"""The transformers pretraining families (GPT-NeoX, Mamba-2, RWKV) in the config and the
planner: FLOPs and parameters against hand counts at one shape, errors that name the key, and
the paper config's Table 6 cells planned against the GPU's memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from effbench import config as cfg
from effbench.plan import families
from effbench.plan.memory import GB, estimate
from effbench.plan.params import flops_per_token, parameter_counts

from config_edits import DELETE, edited

ROOT = Path(__file__).resolve().parents[2]
EXTENDED = yaml.safe_load((ROOT / "config" / "extended.yaml").read_text())
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())

# One small shape, counted by hand below: L = 2 layers, H = 8, F = 16, V = 10, S = 32.
SHAPE = dict(num_layers=2, hidden_size=8, num_attention_heads=2, ffn_hidden_size=16, seq_length=32,
             rotary_base=10000.0, norm_epsilon=1e-5, tie_embeddings=False, init_method_std=0.02)
NEOX = {**SHAPE, "family": "gpt_neox", "gpt_neox": {"rotary_pct": 0.25, "parallel_residual": True}}
MAMBA2 = {**SHAPE, "family": "mamba2",
          "mamba2": {"state_size": 4, "expand": 2, "head_dim": 4, "n_groups": 1, "conv_kernel": 3, "chunk_size": 8}}
RWKV = {**SHAPE, "family": "rwkv"}


def test_parameters_by_hand():
    # GPT-NeoX layer: 2 LayerNorms 2·2·8 = 32; qkv 3·64 + 24 = 216; dense 64 + 8 = 72;
    # fc_in 8·16 + 16 = 144; fc_out 16·8 + 8 = 136 -> 600. Two layers + final LayerNorm 16 = 1216.
    assert parameter_counts(NEOX, 10) == {"total": 1216 + 160, "embedding": 160, "non_embedding": 1216,
                                          "active_non_embedding": 1216, "output_projection": 80}
    # Mamba-2: inner I = 16, 4 heads, conv channels 16 + 2·4 = 24, in_proj rows 2·16 + 2·4 + 4 = 44.
    # Layer: norm 8 + in_proj 8·44 = 352 + conv 24·3 + 24 = 96 + dt_bias/A_log/D 12 + gated norm 16
    # + out_proj 16·8 = 128 -> 612. Two layers + norm_f 8 = 1232.
    assert parameter_counts(MAMBA2, 10)["non_embedding"] == 1232
    # RWKV block: ln1, ln2 32; time mix: decay, first, 3 mixes 5·8 = 40 + 4·64 = 256; channel
    # mix: 2 mixes 16 + key 128 + receptance 64 + value 128 = 336 -> 664. Two + pre_ln 16 + ln_out 16.
    assert parameter_counts(RWKV, 10)["non_embedding"] == 2 * 664 + 16 + 16


def test_flops_per_token_by_hand():
    # 6 · (non-embedding + output projection 80) + the token-mixing term.
    assert flops_per_token(NEOX, 32, vocab_size=10) == 6 * (1216 + 80) + 12 * 2 * 8 * 32  # attention: 12·L·H·S
    # SSM recurrence: 15·L·I·N + 9·L·I = 15·2·16·4 + 9·2·16 = 1920 + 288, no sequence term.
    assert flops_per_token(MAMBA2, 32, vocab_size=10) == 6 * (1232 + 80) + 2208
    assert flops_per_token(MAMBA2, 4096, vocab_size=10) == flops_per_token(MAMBA2, 32, vocab_size=10)
    # WKV recurrence: 51·L·H = 51·2·8 = 816.
    assert flops_per_token(RWKV, 32, vocab_size=10) == 6 * (1360 + 80) + 816
    # State instead of a KV cache: Mamba-2 keeps I·N + (K-1)·conv channels per layer, RWKV 5·H.
    assert families.recurrent_state_elements(MAMBA2) == 2 * (16 * 4 + 2 * 24)
    assert families.recurrent_state_elements(RWKV) == 2 * 5 * 8
    assert families.recurrent_state_elements(NEOX) == 0
    # Training keeps Mamba-2's SSM state at every chunk boundary: I·N / chunk per token
    # (16·4/8 = 8 at chunks of 8, 4 at chunks of 16).
    longer = {**MAMBA2, "mamba2": {**MAMBA2["mamba2"], "chunk_size": 16}}
    assert families.layer_activation_elements(MAMBA2) - families.layer_activation_elements(longer) == 8 - 4


def test_nsa_flops_and_parameters_by_hand():
    """NSA on GQA heads (L 2, H 8, 2 heads of 4, 1 kv head; blocks of 4 every 2 tokens, 2 selected
    blocks of 4, a window of 4, the compression MLP one head wide: hidden int(0.25 · 16) = 4)."""
    nsa = {**SHAPE, "attention": "nsa", "num_query_groups": 1, "add_qkv_bias": False, "mla": None, "moe": None,
           "nsa": {"sliding_window_size": 4, "compress_block_size": 4, "compress_block_sliding_stride": 2,
                   "selection_block_size": 4, "num_selected_blocks": 2, "compress_mlp_expand_factor": 0.25}}
    # Compression MLPs, keys and values: 2 · (16·4 + 4 + 4·4 + 4) = 176.
    # Attention: qkv 8·(2 + 2)·4 = 128, output 8·8 = 64, gate 8·6 + 6 = 54, memory kv 8,
    # intra-block positions 2·4·4 = 32, compression 176, rotary frequencies 2 -> 464.
    # Layer: 464 + SwiGLU 3·8·16 = 384 + norms 16 = 864; two layers + final norm 8 = 1736.
    assert parameter_counts(nsa, 10)["non_embedding"] == 1736
    # Keys a query attends at S = 32: 32/2 compressed + 2·4 selected + 4 in the window = 28.
    # 6 · (1736 + 80) + 12·L·H·28 + 6·L·(176·1/2 − 176): the MLPs run once per 2 tokens.
    assert flops_per_token(nsa, 32, vocab_size=10) == 6 * 1816 + 12 * 2 * 8 * 28 + 6 * 2 * (88 - 176)


def test_extended_config_resolves_each_family():
    cells = {c.technique: c.settings for c in cfg.plan(EXTENDED).pretrain}
    assert {t: families.family(s["model"]) for t, s in cells.items()} == {
        "gqa": "gpt", "nsa": "gpt", "abs": "gpt", "sinusoidal": "gpt", "relative": "gpt", "nope": "gpt",
        "pythia": "gpt_neox", "mamba": "mamba2", "rwkv": "rwkv"}
    # megatron-only keys set on shared layers do not reach a family's settings (nor its hash).
    assert "attention" not in cells["mamba"]["model"] and "num_query_groups" not in cells["rwkv"]["model"]
    assert cells["pythia"]["model"]["rotary_base"] == 10000.0  # GPT-NeoX keeps its RoPE base
    # A megatron cell's settings are exactly what they were before families existed.
    assert "family" not in cells["gqa"]["model"]


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        # an option of another family on a family's technique
        (("pretrain", "techniques", "mamba", "mla"), {"kv_lora_rank": 32}, "pretrain.techniques.mamba.mla"),
        (("pretrain", "techniques", "rwkv", "attention"), "gqa", "pretrain.techniques.rwkv.attention"),
        (("pretrain", "techniques", "gqa", "mamba2"), {"state_size": 16}, "pretrain.techniques.gqa.mamba2"),
        # a state size of 0, an unknown family
        (("pretrain", "techniques", "mamba", "mamba2", "state_size"), 0, "pretrain.techniques.mamba.mamba2.state_size"),
        (("pretrain", "techniques", "rwkv", "family"), "rwkv7", "pretrain.techniques.rwkv.family"),
        # shapes the scan cannot take
        (("pretrain", "techniques", "mamba", "mamba2", "chunk_size"), 48, "pretrain.techniques.mamba.mamba2.chunk_size"),
        (("pretrain", "techniques", "mamba", "mamba2", "head_dim"), 96, "pretrain.techniques.mamba.mamba2.head_dim"),
        (("pretrain", "techniques", "mamba", "mamba2"), DELETE, "pretrain.techniques.mamba"),
        # NSA: blocks that do not tile the sequence, its options on another attention, no options
        (("pretrain", "techniques", "nsa", "nsa", "selection_block_size"), 48, "pretrain.techniques.nsa.nsa.selection_block_size"),
        (("pretrain", "techniques", "nsa", "nsa", "compress_block_sliding_stride"), 5,
         "pretrain.techniques.nsa.nsa.compress_block_sliding_stride"),
        (("pretrain", "techniques", "gqa", "nsa"), {"sliding_window_size": 32, "compress_block_size": 16,
                                                   "compress_block_sliding_stride": 8, "selection_block_size": 16,
                                                   "num_selected_blocks": 2}, "pretrain.techniques.gqa.nsa"),
        (("pretrain", "techniques", "nsa", "nsa"), DELETE, "pretrain.techniques.nsa.nsa"),
        (("pretrain", "techniques", "nsa", "position_embedding"), "none", "pretrain.techniques.nsa.position_embedding"),
    ],
)
def test_family_errors_name_the_key(path, value, key):
    with pytest.raises(cfg.ConfigError, match=f"`{key}"):
        cfg.plan(edited(EXTENDED, path, value))


def test_paper_plans_table_6_cells_against_the_gpu():
    """The paper config's attention-free rows are planned at its sizes, each under the GPU."""
    cells = {c.name: c.settings for c in cfg.plan(PAPER).pretrain}
    vocab = int(PAPER["data"]["pretrain"]["shards"]["vocab_size"])
    for name in ("0.5b/pythia", "0.5b/mamba", "0.5b/rwkv", "1.5b/pythia", "1.5b/mamba", "1.5b/rwkv"):
        s = cells[name]
        peak = estimate(s, vocab).peak
        assert 0 < peak < PAPER["cluster"]["gpu_memory_gb"] * GB, name
        # bf16 state of a transformers family stays whole (megatron's distributed optimizer
        # wraps megatron's models only): its plan counts the whole optimizer state.
        assert s["parallel"]["optimizer_sharding"] == "none"
    assert cells["1.5b/gqa"]["parallel"]["optimizer_sharding"] == "optimizer"
