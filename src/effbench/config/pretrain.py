"""The pretraining grid: size × technique cells, their merged model settings, the parallel
layout, and the cells exported to Hugging Face format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..plan.families import FAMILIES, FAMILY_KEYS, GPT, GPT_ONLY_KEYS, OPTION_BLOCKS, family
from .errors import ConfigError
from .merge import deep_merge

# Techniques that map onto a Llama/Qwen2-style Hugging Face checkpoint.
MOE_KEYS = ("num_experts", "router_topk", "aux_loss_coeff")  # an override may set only some of them
# Set on some layer of every cell (no layer alone needs them, so the schema cannot require them).
REQUIRED_MODEL_KEYS = (
    "num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "seq_length", "attention",
    "rotary_base", "normalization", "norm_epsilon", "tie_embeddings", "init_method_std",
)


@dataclass(frozen=True)
class PretrainCell:
    size: str
    technique: str
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.size}/{self.technique}"


def _layers(pt: dict[str, Any], size: str, technique: str) -> list[tuple[str, dict[str, Any]]]:
    """(config key, settings) of a cell's model layers, lowest first."""
    size_cfg = {k: v for k, v in pt["sizes"][size].items() if k != "overrides"}
    return [
        ("pretrain.model_defaults", pt["model_defaults"]),
        (f"pretrain.sizes.{size}", size_cfg),
        (f"pretrain.techniques.{technique}", pt["techniques"][technique]),
        (f"pretrain.sizes.{size}.overrides.{technique}", pt["sizes"][size].get("overrides", {}).get(technique, {})),
    ]


def _set_at(layers: list[tuple[str, dict[str, Any]]], *key: str) -> str:
    """The config key to edit for a merged model key: where its winning layer sets it."""
    for where, layer in reversed(layers):
        node: Any = layer
        for k in key:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None:
            return ".".join((where, *key))
    return ".".join(("pretrain.model_defaults", *key))


def resolve_model(config: dict[str, Any], size: str, technique: str) -> dict[str, Any]:
    """defaults < size < technique < size.overrides.<technique>, then attention rules."""
    layers = _layers(config["pretrain"], size, technique)
    m: dict[str, Any] = {}
    for _, layer in layers:
        m = deep_merge(m, layer)
    where = f"pretrain cell {size}/{technique}"
    if family(m) != GPT:
        return _resolve_family(m, layers, where, size, technique)
    for key in REQUIRED_MODEL_KEYS:
        if key not in m:
            raise ConfigError(
                f"{where}: `{key}` is set nowhere; set config key `pretrain.sizes.{size}.{key}` "
                f"(or pretrain.model_defaults.{key}, pretrain.techniques.{technique}.{key})"
            )
    for block in ("gpt_neox", "mamba2"):
        if m.get(block):
            raise ConfigError(f"{where}: family gpt (megatron-core) has no option `{block}` (config key "
                              f"`{_set_at(layers, block)}`); set `family: {block}` on the technique to use it")
    heads = m["num_attention_heads"]
    if m["hidden_size"] % heads:
        raise ConfigError(f"{where}: hidden_size {m['hidden_size']} is not divisible by num_attention_heads {heads} "
                          f"(config key `{_set_at(layers, 'num_attention_heads')}`, or "
                          f"`{_set_at(layers, 'hidden_size')}`)")
    attention = m["attention"]
    if attention == "mha":
        m["num_query_groups"] = None
    elif attention == "mqa":
        m["num_query_groups"] = 1
    elif attention == "gqa":
        g = m.get("num_query_groups")
        if not g or heads % g or g in (1, heads):
            raise ConfigError(
                f"{where}: gqa needs num_query_groups strictly between 1 and num_attention_heads ({heads}) "
                f"that divides it, got {g!r} (config key `{_set_at(layers, 'num_query_groups')}`)"
            )
    elif attention == "nsa":
        _check_nsa(m, layers, where, technique)
    elif attention == "mla":
        m["num_query_groups"] = None
        if not m.get("mla"):
            raise ConfigError(f"{where}: attention mla needs its settings "
                              f"(config key `pretrain.techniques.{technique}.mla`)")
    if attention != "nsa" and m.get("nsa"):
        raise ConfigError(f"{where}: `nsa` options on attention {attention!r} (config key `{_set_at(layers, 'nsa')}`); "
                          "set attention: nsa to use them")
    if attention == "nsa" and m.get("position_embedding", "rope") != "rope":
        raise ConfigError(f"{where}: nsa rotates its queries and keys itself (RoPE); position_embedding "
                          f"{m['position_embedding']!r} needs another attention "
                          f"(config key `{_set_at(layers, 'position_embedding')}`)")
    if attention != "mla":
        m["mla"] = None
    elif m.get("position_embedding", "rope") != "rope":
        raise ConfigError(f"{where}: mla applies its own decoupled RoPE; position_embedding "
                          f"{m['position_embedding']!r} needs another attention "
                          f"(config key `{_set_at(layers, 'position_embedding')}`)")
    moe = m.get("moe")
    if moe:
        absent = [k for k in MOE_KEYS if k not in moe]
        if absent:
            raise ConfigError(f"{where}: moe needs {', '.join(absent)} (config key "
                              f"`{_set_at(layers, 'moe')}`)")
        if moe["router_topk"] > moe["num_experts"]:
            raise ConfigError(f"{where}: moe.router_topk {moe['router_topk']} > moe.num_experts {moe['num_experts']} "
                              f"(config key `{_set_at(layers, 'moe', 'router_topk')}`)")
        # Derived, not a default: null (or absent) means "the size's dense FFN" ("0.5B×8").
        m["moe"] = {**moe, "expert_ffn_hidden_size": moe.get("expert_ffn_hidden_size") or m["ffn_hidden_size"]}
    else:
        m["moe"] = None
    return m


SHARED_FAMILY_KEYS = ("num_layers", "hidden_size", "seq_length", "norm_epsilon", "tie_embeddings", "init_method_std")


def _resolve_family(m: dict[str, Any], layers: list[tuple[str, dict[str, Any]]], where: str, size: str,
                    technique: str) -> dict[str, Any]:
    """A transformers family's model section: its own keys present, no other family's options."""
    fam = family(m)
    if fam not in FAMILIES:
        raise ConfigError(f"{where}: unknown family {fam!r} (config key `{_set_at(layers, 'family')}`); "
                          f"families: {', '.join(FAMILIES)}")
    for key in (*SHARED_FAMILY_KEYS, *FAMILY_KEYS[fam]):
        if key not in m:
            raise ConfigError(f"{where}: `{key}` is set nowhere; set config key `pretrain.sizes.{size}.{key}` "
                              f"(or pretrain.model_defaults.{key}, pretrain.techniques.{technique}.{key})")
    # Options of another family, set for this cell (model_defaults and sizes are shared by every
    # family, so only the technique's own layers are held to this).
    own = {k for where_, layer in layers if ".techniques." in where_ or ".overrides." in where_ for k in layer}
    gpt_only = [k for k in GPT_ONLY_KEYS if k not in FAMILY_KEYS[fam]]
    foreign = [k for k in own if k in gpt_only or (k in _ALL_BLOCKS and k not in OPTION_BLOCKS[fam])]
    if foreign:
        k = sorted(foreign)[0]
        raise ConfigError(f"{where}: family {fam} has no option `{k}` (config key `{_set_at(layers, k)}`); "
                          f"its options: {', '.join(OPTION_BLOCKS[fam]) or 'none beyond the shared shape keys'}")
    for block in _ALL_BLOCKS:
        if block not in OPTION_BLOCKS[fam]:
            m.pop(block, None)
    if fam == "mamba2":
        _check_mamba2(m, layers, where, technique)
    if fam in ("gpt_neox",) and m["hidden_size"] % m["num_attention_heads"]:
        raise ConfigError(f"{where}: hidden_size {m['hidden_size']} is not divisible by num_attention_heads "
                          f"{m['num_attention_heads']} (config key `{_set_at(layers, 'num_attention_heads')}`)")
    for k in gpt_only:  # the keys shared layers set for megatron's GPT mean nothing here
        m.pop(k, None)
    return {**m, "family": fam, "mla": None, "moe": None}


_ALL_BLOCKS = tuple(sorted({b for blocks in OPTION_BLOCKS.values() for b in blocks}))


def _check_nsa(m: dict[str, Any], layers: list[tuple[str, dict[str, Any]]], where: str, technique: str) -> None:
    """NSA's blocks must tile the sequence, and its key/value heads divide the query heads."""
    o = m.get("nsa")
    if not o:
        raise ConfigError(f"{where}: attention nsa needs its settings (config key `pretrain.techniques.{technique}.nsa`)")
    heads, g = int(m["num_attention_heads"]), m.get("num_query_groups")
    if g and heads % int(g):
        raise ConfigError(f"{where}: nsa shares key/value heads like gqa: num_query_groups {g} must divide "
                          f"{heads} heads (config key `{_set_at(layers, 'num_query_groups')}`)")
    seq = int(m["seq_length"])
    for key in ("compress_block_size", "selection_block_size"):
        if seq % int(o[key]):
            raise ConfigError(f"{where}: nsa.{key} {o[key]} does not divide seq_length {seq} "
                              f"(config key `{_set_at(layers, 'nsa', key)}`)")
    if int(o["compress_block_size"]) % int(o["compress_block_sliding_stride"]):
        raise ConfigError(f"{where}: nsa.compress_block_sliding_stride {o['compress_block_sliding_stride']} does not "
                          f"divide compress_block_size {o['compress_block_size']} "
                          f"(config key `{_set_at(layers, 'nsa', 'compress_block_sliding_stride')}`)")


def _check_mamba2(m: dict[str, Any], layers: list[tuple[str, dict[str, Any]]], where: str, technique: str) -> None:
    o = m.get("mamba2")
    if not o:
        raise ConfigError(f"{where}: family mamba2 needs its options (config key `pretrain.techniques.{technique}.mamba2`, "
                          "at least state_size)")
    inner = int(o["expand"]) * int(m["hidden_size"])
    if inner % int(o["head_dim"]):
        raise ConfigError(f"{where}: mamba2.head_dim {o['head_dim']} does not divide expand × hidden_size = {inner} "
                          f"(config key `{_set_at(layers, 'mamba2', 'head_dim')}`)")
    heads = inner // int(o["head_dim"])
    if heads % int(o["n_groups"]):
        raise ConfigError(f"{where}: mamba2.n_groups {o['n_groups']} does not divide its {heads} heads "
                          f"(config key `{_set_at(layers, 'mamba2', 'n_groups')}`)")
    if int(m["seq_length"]) % int(o["chunk_size"]):  # the scan would pad every sequence: uncounted FLOPs
        raise ConfigError(f"{where}: mamba2.chunk_size {o['chunk_size']} does not divide seq_length {m['seq_length']} "
                          f"(config key `{_set_at(layers, 'mamba2', 'chunk_size')}`)")


def parallel_layout(config: dict[str, Any]) -> dict[str, Any]:
    """The pretraining job's parallel layout (``pretrain.parallel``), with the derived sizes.

    One process per GPU (on a CPU: per ``gpus_per_node`` CPU processes), ``nodes`` nodes.
    Data parallel, optionally with the optimizer state sharded over the data-parallel ranks and
    MoE experts split over ``expert_parallel`` of them. Tensor parallel > 1 is rejected (the
    training loop does not shard layers).
    """
    layout = dict(config["pretrain"]["parallel"])
    tp = layout["tensor_parallel"]
    if tp != 1:
        raise ConfigError(
            f"config key `pretrain.parallel.tensor_parallel`: {tp} is not supported; this pipeline trains "
            f"data parallel only (tensor_parallel: 1). Use more gpus_per_node or nodes instead."
        )
    world = layout["nodes"] * layout["gpus_per_node"]
    ep = layout["expert_parallel"]
    if world % ep:
        raise ConfigError(f"config key `pretrain.parallel.expert_parallel`: {ep} does not divide the world size "
                          f"{world} (nodes × gpus_per_node)")
    if ep > 1 and config["device"] == "cpu":
        raise ConfigError("config key `pretrain.parallel.expert_parallel`: expert parallelism runs on CUDA only "
                          "(megatron-core's all-to-all token dispatcher); use 1 with device: cpu")
    return {**layout, "world_size": world, "data_parallel": world // tp, "pipeline_parallel": 1}


def cell_layout(layout: dict[str, Any], model: dict[str, Any], where: str, precision: str = "fp32") -> dict[str, Any]:
    """A cell's own layout: expert parallelism applies to MoE cells only (a dense cell's settings,
    and so its results, do not change with it), and must divide the cell's expert count. A
    transformers family (GPT-NeoX, Mamba-2, RWKV) in bf16 keeps its optimizer state whole: sharding
    bf16 state is megatron's distributed optimizer, which wraps megatron's own models only."""
    moe, ep = model["moe"], layout["expert_parallel"]
    if family(model) != GPT and precision == "bf16" and layout.get("optimizer_sharding", "none") != "none":
        return {**layout, "expert_parallel": 1, "optimizer_sharding": "none"}
    if not moe:
        return {**layout, "expert_parallel": 1}
    if moe["num_experts"] % ep:
        raise ConfigError(f"{where}: config key `pretrain.parallel.expert_parallel`: {ep} does not divide "
                          f"moe.num_experts {moe['num_experts']}")
    return layout


def pretrain_settings(config: dict[str, Any], size: str, technique: str) -> dict[str, Any]:
    """Everything a pretraining cell's result depends on (goes through ``params:``)."""
    training = dict(config["pretrain"]["training"])
    mb, gb = training["micro_batch_size"], training["global_batch_size"]
    if gb % mb:
        raise ConfigError(
            f"config key `pretrain.training.global_batch_size`: {gb} is not a multiple of micro_batch_size {mb}"
        )
    if training["min_lr"] > training["lr"]:
        raise ConfigError("config key `pretrain.training.min_lr`: larger than pretrain.training.lr")
    if training["warmup_steps"] >= training["train_steps"]:
        raise ConfigError("config key `pretrain.training.warmup_steps`: must be smaller than pretrain.training.train_steps")
    layout = parallel_layout(config)
    if gb % (mb * layout["data_parallel"]):
        raise ConfigError(
            f"config key `pretrain.training.global_batch_size`: {gb} is not a multiple of micro_batch_size × "
            f"data-parallel size ({mb} × {layout['data_parallel']}, from pretrain.parallel)"
        )
    model = resolve_model(config, size, technique)
    return {
        "size": size,
        "technique": technique,
        "model": model,
        "training": training,
        "parallel": cell_layout(layout, model, f"pretrain cell {size}/{technique}", training["precision"]),
        "device": config["device"],
        "seed": config["seed"],
        "measure": config["measure"],
    }


def pretrain_cells(config: dict[str, Any]) -> list[PretrainCell]:
    pt = config["pretrain"]
    for size, s in pt["sizes"].items():
        for t in s.get("overrides", {}):
            if t not in pt["techniques"]:
                raise ConfigError(f"config key `pretrain.sizes.{size}.overrides.{t}`: unknown technique {t!r}; "
                                  f"defined techniques: {sorted(pt['techniques'])}")
    cells = []
    for size, techniques in pt["grid"].items():
        if size not in pt["sizes"]:
            raise ConfigError(
                f"config key `pretrain.grid.{size}`: unknown size {size!r}; defined sizes: {sorted(pt['sizes'])}"
            )
        for t in techniques:
            if t not in pt["techniques"]:
                raise ConfigError(
                    f"config key `pretrain.grid.{size}`: unknown technique {t!r}; "
                    f"defined techniques: {sorted(pt['techniques'])}"
                )
            cells.append(PretrainCell(size, t, pretrain_settings(config, size, t)))
    for t in pt["export_hf"]:
        if t not in pt["techniques"]:
            raise ConfigError(f"config key `pretrain.export_hf`: unknown technique {t!r}")
    return cells


def export_cells(config: dict[str, Any], cells: list[PretrainCell]) -> list[PretrainCell]:
    """The cells ``pretrain.export_hf`` names; one whose model has no exact Hugging Face class is
    refused here, at DAG build, with the exporter's own reason (:mod:`effbench.pretrain.export_families`)."""
    from ..pretrain.export_families import exportable  # pure: no torch

    wanted = set(config["pretrain"]["export_hf"])
    out = []
    for c in cells:
        if c.technique not in wanted:
            continue
        reason = exportable(c.settings["model"])
        if reason is not None:
            raise ConfigError(f"config key `pretrain.export_hf`: technique {c.technique!r} "
                              f"({c.size}/{c.technique}) cannot be exported: {reason}")
        out.append(c)
    return out
