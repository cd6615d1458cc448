"""Real megatron-core GPT models on CPU: build, overfit one batch, check shapes and counts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

VOCAB = 512
MLA = dict(q_lora_rank=None, kv_lora_rank=64, qk_head_dim=64, qk_pos_emb_head_dim=32, v_head_dim=64)
MOE = dict(num_experts=4, router_topk=2, aux_loss_coeff=0.01, expert_ffn_hidden_size=256)
VARIANTS: dict[str, dict[str, Any]] = {
    "mha": {},
    "mqa": {"attention": "mqa"},
    "gqa": {"attention": "gqa", "num_query_groups": 2},
    "mla": {"attention": "mla", "mla": MLA},
    "moe": {"attention": "gqa", "num_query_groups": 2, "moe": MOE},
    # Positional encodings (megatron-core's position_embedding_type): a learned table, none (NoPE).
    "abs": {"attention": "gqa", "num_query_groups": 2, "position_embedding": "learned_absolute"},
    "nope": {"attention": "gqa", "num_query_groups": 2, "position_embedding": "none"},
    "relative": {"attention": "gqa", "num_query_groups": 2, "position_embedding": "relative"},
}


def _fit_one_batch(model: torch.nn.Module, steps: int = 15) -> list[float]:
    """The losses of `steps` AdamW steps on `_batch()` (the model learning one batch)."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    ids, pos, labels = _batch()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, position_ids=pos, attention_mask=None, labels=labels).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _batch(seq: int = 64, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    pos = torch.arange(seq).unsqueeze(0).expand(batch, -1)
    return ids, pos, torch.roll(ids, -1, dims=1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_overfits_one_batch(dist_env: Any, tiny_settings: Any, variant: str) -> None:
    from effbench.pretrain.model import build_gpt_model

    settings = tiny_settings(**VARIANTS[variant])
    torch.manual_seed(0)
    model = build_gpt_model(settings, VOCAB, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    ids, pos, labels = _batch()
    losses = []
    for step in range(15):
        loss = model(input_ids=ids, position_ids=pos, attention_mask=None, labels=labels)
        assert loss.shape == ids.shape  # megatron returns per-token losses [b, s]
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0 and variant == "moe":
            _check_moe_aux_loss(model)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(math.log(VOCAB), abs=0.5)  # near-uniform at init
    assert losses[-1] < 0.5 * losses[0], losses


def _check_moe_aux_loss(model: torch.nn.Module) -> None:
    from megatron.core.transformer.moe.moe_utils import (
        clear_aux_losses_tracker,
        get_moe_layer_wise_logging_tracker,
    )

    tracker = get_moe_layer_wise_logging_tracker()
    # The router records the load-balancing loss per layer and attaches its gradient to
    # the activations (MoEAuxLossAutoScaler) rather than adding it to the returned loss.
    values = tracker["load_balancing_loss"]["values"]
    assert values.numel() == 2 and bool((values > 0).all())
    clear_aux_losses_tracker()
    routers = [p for n, p in model.named_parameters() if n.endswith("mlp.router.weight")]
    assert len(routers) == 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in routers)


@pytest.mark.parametrize(("variant", "groups"), [("mha", 4), ("mqa", 1), ("gqa", 2)])
def test_query_group_shapes(dist_env: Any, tiny_settings: Any, variant: str, groups: int) -> None:
    from effbench.pretrain.model import build_gpt_model
    from effbench.pretrain.sdpa_attention import SDPAttention

    model = build_gpt_model(tiny_settings(**VARIANTS[variant]), VOCAB, "cpu")
    attn = model.decoder.layers[0].self_attention
    head_dim = 256 // 4
    assert attn.config.num_query_groups == groups
    # Fused QKV rows: 4 query heads + one key and one value head per group.
    assert attn.linear_qkv.weight.shape == ((4 + 2 * groups) * head_dim, 256)
    assert isinstance(attn.core_attention, SDPAttention)


def test_mla_uses_sdpa_with_distinct_head_dims(dist_env: Any, tiny_settings: Any) -> None:
    from effbench.pretrain.model import build_gpt_model
    from effbench.pretrain.sdpa_attention import SDPAttention

    model = build_gpt_model(tiny_settings(**VARIANTS["mla"]), VOCAB, "cpu")
    attn = model.decoder.layers[0].self_attention
    assert isinstance(attn.core_attention, SDPAttention)
    assert attn.linear_kv_up_proj.weight.shape == (4 * (64 + 64), 64)
    assert attn.linear_proj.weight.shape == (256, 4 * 64)


def test_count_parameters_by_hand(dist_env: Any, tiny_settings: Any) -> None:
    from effbench.pretrain.model import (
        analytic_parameter_counts,
        build_gpt_model,
        count_parameters,
        flops_per_token,
    )

    settings = tiny_settings()
    counts = count_parameters(build_gpt_model(settings, VOCAB, "cpu"), settings)
    H, F, L, V, S = 256, 512, 2, VOCAB, 64
    per_layer = 2 * H + H * 3 * H + H * H + H * 2 * F + F * H  # norms, qkv, proj, fc1, fc2
    non_emb = L * per_layer + H  # + final norm
    assert counts == {
        "total": non_emb + 2 * V * H,
        "embedding": 2 * V * H,  # untied input embedding + output layer
        "non_embedding": non_emb,
        "active_non_embedding": non_emb,
        "output_projection": V * H,
    }
    assert analytic_parameter_counts(settings, VOCAB) == counts
    assert flops_per_token(settings, S) == 6 * non_emb + 12 * L * H * S
    assert flops_per_token(settings, S, vocab_size=V) == 6 * (non_emb + V * H) + 12 * L * H * S


@pytest.mark.parametrize("variant", ["mqa", "gqa", "mla", "mla-qlora", "moe", "abs", "nope"])
def test_analytic_counts_match_model(dist_env: Any, tiny_settings: Any, variant: str) -> None:
    from effbench.pretrain.model import analytic_parameter_counts, build_gpt_model, count_parameters

    overrides = (
        {"attention": "mla", "mla": {**MLA, "q_lora_rank": 96}}
        if variant == "mla-qlora"
        else VARIANTS[variant]
    )
    settings = tiny_settings(**overrides, tie_embeddings=True, add_qkv_bias=True)
    counts = count_parameters(build_gpt_model(settings, VOCAB, "cpu"), settings)
    assert counts == analytic_parameter_counts(settings, VOCAB)
    # tied: one table (and the learned position table, seq_length x hidden)
    assert counts["embedding"] == VOCAB * 256 + (64 * 256 if variant == "abs" else 0)
    if variant == "moe":
        expert = 3 * 256 * 256
        assert counts["non_embedding"] - counts["active_non_embedding"] == 2 * (4 - 2) * expert


def test_sdpa_matches_megatron_dot_product_attention(dist_env: Any, tiny_settings: Any) -> None:
    """The SDPA core attention reproduces megatron's own (causal, GQA) DotProductAttention.

    Also exercises the CPU compat layer: the local attention builds its causal mask and
    score buffer through the patched CUDA-only helpers.
    """
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from effbench.pretrain.model import transformer_config_from_settings
    from effbench.pretrain.sdpa_attention import SDPAttention

    config = transformer_config_from_settings(tiny_settings(**VARIANTS["gqa"]))
    kw: dict[str, Any] = dict(
        config=config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self"
    )
    ref, sdpa = DotProductAttention(**kw), SDPAttention(**kw)
    g = torch.Generator().manual_seed(1)
    s, b, d = 16, 2, 64
    q = torch.randn(s, b, 4, d, generator=g)
    k, v = (torch.randn(s, b, 2, d, generator=g) for _ in range(2))
    expected = ref(q, k, v, None, attn_mask_type=AttnMaskType.causal)
    got = sdpa(q, k, v, None, attn_mask_type=AttnMaskType.causal)
    assert got.shape == expected.shape == (s, b, 4 * d)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cpu_compat_idempotent(dist_env: Any) -> None:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    from effbench.pretrain.compat_cpu import CpuRNGStatesTracker, apply_cpu_compat

    apply_cpu_compat()
    apply_cpu_compat()
    tracker = get_cuda_rng_tracker()
    assert isinstance(tracker, CpuRNGStatesTracker)
    with tracker.fork():  # model-parallel stream
        a = torch.rand(3)
    with tracker.fork():
        b = torch.rand(3)
    assert not torch.equal(a, b)  # the forked stream advances between forks


@pytest.mark.parametrize(("variant", "table", "rotary"), [("gqa", False, True), ("abs", True, False),
                                                         ("nope", False, False)])
def test_position_embedding_modules(dist_env: Any, tiny_settings: Any, variant: str, table: bool,
                                    rotary: bool) -> None:
    """RoPE: rotary tables, no position table; learned absolute: a position table; none: neither."""
    from effbench.pretrain.model import build_gpt_model

    model = build_gpt_model(tiny_settings(**VARIANTS[variant]), VOCAB, "cpu")
    assert hasattr(model.embedding, "position_embeddings") == table
    assert hasattr(model, "rotary_pos_emb") == rotary


def test_sinusoidal_positions_are_the_fixed_table_not_parameters(dist_env: Any, tiny_settings: Any) -> None:
    """The paper's absolute (sinusoidal) encoding: Vaswani et al.'s table in megatron's absolute
    slot, nothing trained or saved, and the model does use it."""
    from effbench.plan.params import parameter_counts
    from effbench.pretrain.model import build_gpt_model, count_parameters

    s = tiny_settings(attention="gqa", num_query_groups=2, position_embedding="sinusoidal")
    torch.manual_seed(0)
    model = build_gpt_model(s, VOCAB, "cpu")
    assert count_parameters(model, s) == parameter_counts(s, VOCAB)  # no table among the parameters
    assert not any("position" in k for k in model.state_dict())
    table, H = model.embedding.position_embeddings.table, s["hidden_size"]
    std = s["init_method_std"]  # the table at the token embeddings' scale (SinusoidalPositions)
    for p, i in ((0, 0), (5, 3), (63, H // 2 - 1)):
        assert float(table[p, 2 * i]) == pytest.approx(std * math.sin(p / 10000 ** (2 * i / H)), abs=1e-8)
        assert float(table[p, 2 * i + 1]) == pytest.approx(std * math.cos(p / 10000 ** (2 * i / H)), abs=1e-8)
    # One token repeated: without positions every place would see the same values (NoPE).
    ids = torch.full((1, 8), 3)
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=torch.arange(8)[None], attention_mask=None)
    assert not torch.allclose(logits[0, 0], logits[0, 5], atol=1e-4)
    # It learns, if more slowly than the variants above on one batch (0.57 of the first loss after
    # 15 steps, against < 0.5 for RoPE, learned and none): at every position the table's
    # low-frequency cosines add nearly the same vector, a common offset the tokens must outgrow.
    losses = _fit_one_batch(model)
    assert losses[-1] < 0.75 * losses[0], losses


def test_relative_bias_is_causal_shared_and_counted(dist_env: Any, tiny_settings: Any) -> None:
    """T5's relative bias (megatron-core's RelativePositionEmbedding): one table for every layer,
    counted by the planner, used (positions change the output), and causal (a later token never
    changes an earlier position's logits)."""
    from effbench.plan.params import RELATIVE_BUCKETS, parameter_counts
    from effbench.pretrain.model import build_gpt_model, count_parameters

    s = tiny_settings(attention="gqa", num_query_groups=2, position_embedding="relative")
    torch.manual_seed(0)
    model = build_gpt_model(s, VOCAB, "cpu")
    assert count_parameters(model, s) == parameter_counts(s, VOCAB)
    tables = [n for n, _ in model.named_parameters() if "relative_attention_bias" in n]
    assert tables == ["relative_position.relative_attention_bias.weight"]  # one, shared by the layers
    assert model.relative_position.relative_attention_bias.weight.shape == (RELATIVE_BUCKETS, s["num_attention_heads"])
    table = model.relative_position.relative_attention_bias.weight
    torch.nn.init.normal_(table, std=1.0)  # a bias worth seeing
    ids, pos, _ = _batch(seq=16, batch=1)
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos, attention_mask=None)
        changed = ids.clone()
        changed[0, 12:] = (changed[0, 12:] + 1) % VOCAB
        after = model(input_ids=changed, position_ids=pos, attention_mask=None)
        table.zero_()  # no bias: the scores of plain causal attention (NoPE)
        unbiased = model(input_ids=ids, position_ids=pos, attention_mask=None)
    torch.testing.assert_close(after[0, :12], logits[0, :12])
    assert not torch.allclose(after[0, 12:], logits[0, 12:])
    assert not torch.allclose(unbiased[0, 1:], logits[0, 1:], atol=1e-4)  # position 0 sees itself only


NSA = {"sliding_window_size": 16, "compress_block_size": 16, "compress_block_sliding_stride": 8,
       "selection_block_size": 16, "num_selected_blocks": 2, "compress_mlp_expand_factor": 0.0625}


def test_nsa_is_causal_counted_and_trains(dist_env: Any, tiny_settings: Any) -> None:
    """Native sparse attention (native_sparse_attention_pytorch) as megatron's self-attention:
    the planner's parameter count is the built model's, a later token never changes an earlier
    position's logits, and one batch is learned."""
    from effbench.plan.params import parameter_counts
    from effbench.pretrain.model import build_gpt_model, count_parameters

    s = tiny_settings(attention="nsa", num_query_groups=2, nsa=NSA)
    torch.manual_seed(0)
    model = build_gpt_model(s, VOCAB, "cpu")
    assert count_parameters(model, s) == parameter_counts(s, VOCAB)
    ids, pos, labels = _batch()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos, attention_mask=None)
        changed = ids.clone()
        changed[:, 40:] = (changed[:, 40:] + 1) % VOCAB
        after = model(input_ids=changed, position_ids=pos, attention_mask=None)
    torch.testing.assert_close(after[:, :40], logits[:, :40])
    assert not torch.allclose(after[:, 40:], logits[:, 40:])
    model.train()
    losses = _fit_one_batch(model)
    assert losses[0] == pytest.approx(math.log(VOCAB), abs=0.5) and losses[-1] < 0.5 * losses[0], losses
