"""megatron MoE (MHA / MQA / GQA attention, every layer MoE, no shared expert) -> MixtralForCausalLM.

Routing is the same function: megatron (`moe_router_pre_softmax=False`, softmax score) takes the
top-k router logits and softmaxes over those k; Mixtral softmaxes over all experts, takes the
top k and renormalises them to sum 1 - the same weights (exp(l_i) / sum over the top-k exp(l_j)),
the same experts. Both compute the router in fp32 (megatron `moe_router_dtype="fp32"`). Experts
are SwiGLU in both: megatron's per-expert linear_fc1 = [gate; up] and linear_fc2 are stacked
into Mixtral's experts.gate_up_proj [E, 2F, H] and experts.down_proj [E, H, F]
(transformers saves them per expert, w1 / w3 / w2, as Mixtral checkpoints and vLLM name them).
The aux-loss coefficient is recorded as router_aux_loss_coef (training only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effbench.plan.params import num_query_groups
from effbench.pretrain import export_common as common
from effbench.pretrain.export_families import EXPORTABLE


def check_model(model: torch.nn.Module, settings: dict[str, Any]) -> None:
    """Refuse megatron router / expert settings Mixtral would compute differently."""
    c = model.config
    differ = {
        "moe_router_pre_softmax": (c.moe_router_pre_softmax, False),
        "moe_router_score_function": (c.moe_router_score_function, "softmax"),
        "moe_router_topk_scaling_factor": (c.moe_router_topk_scaling_factor, None),
        "moe_router_num_groups": (c.moe_router_num_groups, None),
        "moe_router_enable_expert_bias": (c.moe_router_enable_expert_bias, False),
        "moe_shared_expert_intermediate_size": (c.moe_shared_expert_intermediate_size, None),
        "moe_expert_capacity_factor": (c.moe_expert_capacity_factor, None),  # dropless
        "moe_layer_freq": (c.moe_layer_freq, 1),  # every layer MoE
        "gated_linear_unit": (c.gated_linear_unit, True),
        "add_bias_linear": (c.add_bias_linear, False),
        "add_qkv_bias": (c.add_qkv_bias, False),
    }
    bad = {k: got for k, (got, want) in differ.items() if got != want}
    if bad:
        raise ValueError(f"MoE settings with no Mixtral equivalent: {bad}; exportable: {EXPORTABLE}")


def _experts(sd: common.State, m: str, n_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate_up [E, 2F, H], down [E, H, F]) from SequentialMLP or TE grouped expert names."""
    fc1, fc2 = [], []
    for j in range(n_experts):
        fc1.append(common.get(sd, f"{m}mlp.experts.local_experts.{j}.linear_fc1.weight",
                              f"{m}mlp.experts.linear_fc1.weight{j}"))
        fc2.append(common.get(sd, f"{m}mlp.experts.local_experts.{j}.linear_fc2.weight",
                              f"{m}mlp.experts.linear_fc2.weight{j}"))
    return torch.stack(fc1), torch.stack(fc2)


def convert_state_dict(model: torch.nn.Module, settings: dict[str, Any]) -> common.State:
    sd = common.megatron_state(model)
    E = int(settings["moe"]["num_experts"])
    out: common.State = {}
    common.map_embeddings(sd, out, bool(settings.get("tie_embeddings")))
    for i in range(int(settings["num_layers"])):
        m, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        common.map_layer_norms(sd, m, h, out, "self_attention.linear_qkv.layer_norm_weight", None)
        common.map_gqa_attention(sd, m, h, settings, out)
        out[h + "mlp.gate.weight"] = sd[m + "mlp.router.weight"]
        out[h + "mlp.experts.gate_up_proj"], out[h + "mlp.experts.down_proj"] = _experts(sd, m, E)
    return common.finish(out)


def hf_config(settings: dict[str, Any], vocab_size: int) -> Any:
    from transformers import MixtralConfig

    moe, H, n = settings["moe"], int(settings["hidden_size"]), int(settings["num_attention_heads"])
    cfg = MixtralConfig(
        **common.config_kwargs(settings, vocab_size),
        intermediate_size=int(moe["expert_ffn_hidden_size"]),
        num_key_value_heads=num_query_groups(settings),
        head_dim=H // n,
        num_local_experts=int(moe["num_experts"]),
        num_experts_per_tok=int(moe["router_topk"]),
        router_aux_loss_coef=float(moe["aux_loss_coeff"]),
        output_router_logits=False,
        router_jitter_noise=0.0,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": float(settings.get("rotary_base", 10000.0))},
    )
    cfg.architectures = ["MixtralForCausalLM"]
    return cfg


def export(model: torch.nn.Module, settings: dict[str, Any], vocab_size: int, out_dir: str | Path,
           tokenizer_dir: str | Path | None) -> Path:
    from transformers import MixtralForCausalLM

    check_model(model, settings)
    state = convert_state_dict(model, settings)
    return common.save(MixtralForCausalLM, hf_config(settings, vocab_size), state, out_dir, tokenizer_dir)
