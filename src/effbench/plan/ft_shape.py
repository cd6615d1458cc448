"""The shape of a model to fine-tune, and its exact parameter counts (whole model, per layer,
and what each fine-tuning method trains), in Hugging Face ``config.json`` terms.

Pure Python, for the fine-tuning planner (:mod:`effbench.plan.finetune`). The layouts are
the decoder-only Llama family LlamaFactory fine-tunes here (Llama, Qwen2, Mistral): per layer
q/k/v/o projections, a SwiGLU MLP (gate/up/down), two RMSNorm weights; a final norm, the token
table and an output head unless tied. tests/finetune/test_plan_finetune.py checks the counts
against the model LlamaFactory builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# LoRA targets LlamaFactory's `lora_target: all` finds in these layouts (every linear but lm_head).
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION = LINEARS[:4]
MLP = LINEARS[4:]


@dataclass(frozen=True)
class Shape:
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool  # Qwen2; Llama's attention_bias
    o_bias: bool  # Llama's attention_bias also biases o_proj (Qwen2's does not)
    mlp_bias: bool

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> "Shape":
        """From a ``config.json`` (or the config's ``shape`` hint, the same names)."""
        heads = int(c["num_attention_heads"])
        qwen2 = c.get("model_type") == "qwen2"
        bias = bool(c.get("attention_bias", qwen2))
        return cls(hidden=int(c["hidden_size"]), ffn=int(c["intermediate_size"]), layers=int(c["num_hidden_layers"]),
                   heads=heads, kv_heads=int(c.get("num_key_value_heads") or heads),
                   head_dim=int(c.get("head_dim") or int(c["hidden_size"]) // heads), vocab=int(c["vocab_size"]),
                   tied=bool(c.get("tie_word_embeddings", False)), qkv_bias=bias, o_bias=bias and not qwen2,
                   mlp_bias=bool(c.get("mlp_bias", False)))

    def linears(self) -> dict[str, tuple[int, int, bool]]:
        """One layer's linear modules: name -> (in features, out features, has bias)."""
        H, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (H, q, self.qkv_bias), "k_proj": (H, kv, self.qkv_bias), "v_proj": (H, kv, self.qkv_bias),
                "o_proj": (q, H, self.o_bias), "gate_proj": (H, self.ffn, self.mlp_bias),
                "up_proj": (H, self.ffn, self.mlp_bias), "down_proj": (self.ffn, H, self.mlp_bias)}

    def layer_params(self, modules: tuple[str, ...] | None = None) -> int:
        """Parameters of one decoder layer (``modules``: only those linears, no norms)."""
        lin = sum(i * o + (o if b else 0) for n, (i, o, b) in self.linears().items() if modules is None or n in modules)
        return lin + (2 * self.hidden if modules is None else 0)

    def total_params(self) -> int:
        return self.layers * self.layer_params() + self.hidden + self.vocab * self.hidden * (1 if self.tied else 2)


class NotPlanned(ValueError):
    """The planner cannot count this method's trainable parameters (the reason is the message)."""


def lora_targets(target: str) -> tuple[str, ...]:
    if target.strip() == "all":
        return LINEARS
    names = tuple(t.strip() for t in target.split(",") if t.strip())
    unknown = [n for n in names if n not in LINEARS]
    if unknown:
        raise NotPlanned(f"lora_target {', '.join(unknown)} is not a linear of the Llama/Qwen2/Mistral layout "
                         f"({', '.join(LINEARS)})")
    return names


def trainable_params(shape: Shape, method: dict[str, Any]) -> int:
    """Parameters the method trains, as LlamaFactory sets them up.

    lora (LoRA+, RSLoRA, PiSSA alike): r × (in + out) per target module and layer; DoRA adds a
    magnitude vector (out) per module. freeze: every parameter of the last n layers (first
    -n for negative n; ``freeze_trainable_modules`` all, mlp or self_attn). full: all.
    """
    kind = method["finetuning_type"]
    if kind == "full":
        return shape.total_params()
    if kind == "lora":
        r = int(method.get("lora_rank") or 8)  # LlamaFactory's default rank
        per = sum(r * (i + o) + (o if method.get("use_dora") else 0)
                  for n, (i, o, _) in shape.linears().items() if n in lora_targets(method.get("lora_target") or "all"))
        return shape.layers * per
    if kind == "freeze":
        if method.get("freeze_extra_modules"):
            raise NotPlanned("freeze_extra_modules is not counted by the planner")
        n = int(method.get("freeze_trainable_layers") or 2)
        layers = min(abs(n), shape.layers)
        modules = {"all": None, "mlp": MLP, "self_attn": ATTENTION}
        which = (method.get("freeze_trainable_modules") or "all").strip()
        if which not in modules:
            raise NotPlanned(f"freeze_trainable_modules {which!r} is not counted by the planner (all, mlp, self_attn)")
        return layers * shape.layer_params(modules[which])
    raise NotPlanned(f"finetuning_type {kind!r}")
