"""The catalogue of malformed configs (issue 9, item 3): each case is a small edit of a shipped
config (or raw YAML text for the loader), and each must be rejected when the DAG is built, with
a message that names the key to edit (and, for YAML-level cases, the file and line). A few
cases go through a real `snakemake -n` to show the user sees the same before any job starts.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from config_edits import DELETE, edited
from fake_hub import _put

from effbench import config as cfg
from effbench.config.yaml_strict import load_text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "workflow"))
from workflow_helpers import minimal_config, snakemake  # noqa: E402 (the CLI cases run the real workflow)

CONFIG_TEXT = (ROOT / "config" / "config.yaml").read_text()
PAPER_TEXT = (ROOT / "config" / "paper.yaml").read_text()
DEFAULT = yaml.safe_load(CONFIG_TEXT)
PAPER = yaml.safe_load(PAPER_TEXT)


@dataclass(frozen=True)
class Case:
    id: str
    reject: Callable[[Path], str]  # runs the case, returns the rejection's message
    names: tuple[str, ...]  # regexes the message must contain (the key; file:line where known)


def _message(fn: Callable[[], Any]) -> str:
    with pytest.raises(cfg.ConfigError) as e:
        fn()
    return str(e.value)


def edit(id: str, path: str, value: Any, *names: str, base: dict = DEFAULT) -> Case:
    """A config with one key (dotted path; list indices as digits) set, or deleted with DELETE."""
    keys: list[Any] = []
    node: Any = base
    for k in path.split("."):
        keys.append(int(k) if isinstance(node, list) else k)
        node = node[keys[-1]] if isinstance(node, list) else node.get(k) if isinstance(node, dict) else None
    return Case(id, lambda _: _message(lambda: cfg.plan(edited(base, keys, value))), names or (f"`{re.escape(path)}`",))


def change(id: str, fn: Callable[[dict], None], *names: str, base: dict = DEFAULT) -> Case:
    """A config changed by ``fn`` (for edits of more than one key)."""

    def reject(_: Path) -> str:
        c = copy.deepcopy(base)
        fn(c)
        return _message(lambda: cfg.plan(c))

    return Case(id, reject, names)


def text(id: str, source: str, *names: str, name: str = "cfg.yaml") -> Case:
    """Raw YAML text through the strict loader, then the plan with its key lines."""

    def reject(_: Path) -> str:
        def run() -> None:
            data, where = load_text(source, name)
            cfg.plan(data, where)
        return _message(run)

    return Case(id, reject, names)


def text_edit(id: str, source: str, old: str, new: str, *names: str, name: str) -> Case:
    assert source.count(old) == 1, old
    return text(id, source.replace(old, new), *names, name=name)


def line_of(source: str, fragment: str) -> int:
    return source[: source.index(fragment)].count("\n") + 1


def cli(id: str, config: Callable[[Path], dict], *names: str, raw: str | None = None) -> Case:
    """A real `snakemake -n` (tests/workflow's helper): it fails before any job, naming the key."""

    def reject(tmp: Path) -> str:
        extra = []
        if raw is not None:
            (tmp / "raw.yaml").write_text(raw)
            extra = ["--configfile", str(tmp / "raw.yaml")]  # the last --configfile given wins
        p = snakemake(tmp, config(tmp), *extra, "-n", check=False)
        out = p.stdout + p.stderr
        assert p.returncode != 0, out[-3000:]
        assert not re.search(r"^(?:local)?rule \w+:", p.stdout, re.M), "a job was planned"
        return out

    return Case(id, reject, names)


def _minimal(tmp: Path) -> dict:
    return minimal_config(tmp / "results")


def _minimal_with(fn: Callable[[dict], None]) -> Callable[[Path], dict]:
    def make(tmp: Path) -> dict:
        c = _minimal(tmp)
        fn(c)
        return c
    return make


def with_env(case: Case, **env: str) -> Case:
    """The case with environment variables set (``HF_HOME`` under the case's temporary folder,
    whose hub cache starts empty) while it runs."""

    def reject(tmp: Path) -> str:
        (tmp / "hf" / "hub").mkdir(parents=True, exist_ok=True)
        with pytest.MonkeyPatch.context() as mp:
            for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
                mp.delenv(var, raising=False)
            mp.setenv("HF_HOME", str(tmp / "hf"))
            for k, v in env.items():
                mp.setenv(k, v)
            return case.reject(tmp)

    return Case(case.id, reject, case.names)


OFFLINE = {"HF_HUB_OFFLINE": "1"}
ODD = {"hidden_size": 256, "intermediate_size": 1000, "num_attention_heads": 4, "num_hidden_layers": 2,
       "vocab_size": 1024}  # an FFN of 1000 inputs: no int4 group of 32, 64 or 128 divides it


def quantize_model(id: str, ref: Callable[[Path], dict], *names: str) -> Case:
    """The default config with one more model to quantize, its reference made under the case's
    temporary folder (a model directory, or a model put in the local Hugging Face cache)."""

    def reject(tmp: Path) -> str:
        c = copy.deepcopy(DEFAULT)
        c["quantize"]["models"]["extra"] = ref(tmp)
        return _message(lambda: cfg.plan(c))

    return Case(id, reject, names)


def model_dir(config_json: dict) -> Callable[[Path], dict]:
    def make(tmp: Path) -> dict:
        (tmp / "model").mkdir()
        (tmp / "model" / "config.json").write_text(json.dumps(config_json))
        return {"path": str(tmp / "model")}
    return make


def cached(repo: str, config_json: dict) -> Callable[[Path], dict]:
    def make(tmp: Path) -> dict:  # HF_HOME is tmp/hf (with_env)
        _put(tmp / "hf" / "hub" / f"models--{repo.replace('/', '--')}", {
            "config.json": json.dumps(config_json).encode(), "tokenizer_config.json": b"{}",
            "tokenizer.json": b"{}", "model.safetensors": b"placeholder"})
        return {"hf": repo}
    return make


def _hub_finetune_model(c: dict) -> None:
    c["finetune"]["models"]["hub"] = {"hf": "org/absent", "template": "llama3"}
    c["finetune"]["grid"].append({"models": ["hub"], "methods": ["lora"], "tasks": ["synthetic"]})


PT = "pretrain"
CASES = [
    # --- the issue's own cases ---------------------------------------------------------------
    text("duplicate top-level key", "results: a\nseed: 1\nseed: 2\n", r"cfg\.yaml:3:1", r"`seed`", r"first at cfg\.yaml:2:1"),
    text("duplicate nested key", "pretrain:\n  training:\n    lr: 1\n    lr: 2\n", r"cfg\.yaml:4:5", r"`pretrain\.training\.lr`"),
    text("duplicate key in a flow mapping", "pretrain: {sizes: {xs: {num_layers: 2, num_layers: 3}}}\n",
         r"cfg\.yaml:1:\d+", r"`pretrain\.sizes\.xs\.num_layers`"),
    text("duplicate key in the shipped config", CONFIG_TEXT.replace("seed: 1234\n", "seed: 1234\nseed: 7\n"),
         r"config\.yaml:\d+:1", r"`seed`", name="config/config.yaml"),
    text("syntax error: unclosed flow sequence", "results: r\nseed: [1,\n", r"cfg\.yaml:3:1: YAML syntax error"),
    text("syntax error: tab indentation", "pretrain:\n\tsizes: {}\n", r"cfg\.yaml:2:1: YAML syntax error"),
    text("syntax error: bad mapping value", "results: r\nseed: a: b\n", r"cfg\.yaml:2:\d+: YAML syntax error"),
    text_edit("override typo kv_lora_rankk (paper.yaml, with its line)", PAPER_TEXT, "{mla: {mla: {kv_lora_rank: 112}},",
              "{mla: {mla: {kv_lora_rankk: 112}},", r"`pretrain\.sizes\.0\.5b\.overrides\.mla\.mla\.kv_lora_rankk`",
              rf"\[config/paper\.yaml:{line_of(PAPER_TEXT, 'overrides: {mla: {mla: {kv_lora_rank: 112')}\]",
              name="config/paper.yaml"),
    text_edit("size num_layers -3 (config.yaml, with its line)", CONFIG_TEXT, "xs: {num_layers: 2,", "xs: {num_layers: -3,",
              r"`pretrain\.sizes\.xs\.num_layers`", rf"\[config/config\.yaml:{line_of(CONFIG_TEXT, 'xs: {num_layers')}\]",
              name="config/config.yaml"),
    edit("override num_layers -3", "pretrain.sizes.xs.overrides", {"mla": {"num_layers": -3}},
         r"pretrain\.sizes\.xs\.overrides\.mla\.num_layers"),
    edit("override for an unknown technique", "pretrain.sizes.xs.overrides", {"mlaa": {"num_layers": 3}},
         r"pretrain\.sizes\.xs\.overrides\.mlaa"),
    edit("override with an unknown model key", "pretrain.sizes.xs.overrides", {"mla": {"num_layer": 3}},
         r"pretrain\.sizes\.xs\.overrides\.mla\.num_layer\b"),
    change("override: partial moe on a dense technique", lambda c: c[PT]["sizes"]["xs"].update(
        overrides={"gqa": {"moe": {"router_topk": 1}}}), r"pretrain\.sizes\.xs\.overrides\.gqa\.moe"),
    change("seq_length 127 with max_model_len 128", lambda c: (  # rtn: no calibration window to refuse first
        c[PT]["sizes"]["xs"].update(seq_length=127), c["quantize"]["int4"].update(method="rtn"),
        c["quantize"].setdefault("int8", {}).update(method="rtn")),
        r"`inference\.vllm\.max_model_len`"),
    edit("calibration sequence longer than the context", "quantize.int4.calibration.seq_length", 256),
    edit("eval max_model_len (vllm) longer than the context", "eval.model", "vllm", r"`eval\.max_model_len`"),
    edit("heads do not divide hidden", "pretrain.sizes.xs.num_attention_heads", 3,
         r"`pretrain\.sizes\.xs\.num_attention_heads`"),
    # --- sizes and shapes ------------------------------------------------------------------------
    edit("negative num_layers", "pretrain.sizes.xs.num_layers", -3),
    edit("zero hidden_size", "pretrain.sizes.xs.hidden_size", 0),
    edit("zero ffn_hidden_size on a technique", "pretrain.techniques.mqa.ffn_hidden_size", 0),
    edit("gqa groups do not divide heads", "pretrain.sizes.xs.num_query_groups", 3, r"`pretrain\.sizes\.xs\.num_query_groups`"),
    edit("mla without its settings", "pretrain.techniques.mla.mla", None, r"`pretrain\.techniques\.mla\.mla`"),
    edit("moe topk above experts", "pretrain.techniques.moe.moe.router_topk", 9, r"`pretrain\.techniques\.moe\.moe\.router_topk`"),
    edit("moe with one expert", "pretrain.techniques.moe.moe.num_experts", 1),
    edit("model key set nowhere", "pretrain.sizes.xs.seq_length", DELETE, r"`pretrain\.sizes\.xs\.seq_length`"),
    edit("paper: gqa groups 5 at 3b", "pretrain.sizes.3b.num_query_groups", 5, r"`pretrain\.sizes\.3b\.num_query_groups`",
         base=PAPER),
    # --- unknown keys at every level -----------------------------------------------------------
    edit("unknown top-level key", "resluts", "r", r"`resluts`"),
    edit("unknown data key", "data.pretrain.synthetic.vocab", 10),
    edit("unknown training key", "pretrain.training.lr_decay", 0.1),
    edit("unknown technique key", "pretrain.techniques.mla.mla.kv_lora_rankk", 64),
    edit("unknown fine-tuning method key", "finetune.methods.lora.lora_rnk", 8),
    edit("unknown vllm key", "inference.vllm.max_len", 128),
    edit("unknown calibration key", "quantize.int4.calibration.sample", 8),
    change("unknown stage environment", lambda c: c.update(environments={"train": "/usr/bin/python3"}),
           r"`environments\.train`"),
    edit("missing required key", "measure.interval_s", DELETE),
    edit("eval without quantize", "quantize", DELETE, r"`quantize`"),
    edit("shards source without its settings", "data.pretrain.source", "shards", r"`data\.pretrain\.shards`"),
    # --- wrong types and bad enums ---------------------------------------------------------------
    edit("seed is a string", "seed", "one"),
    edit("lr is a string", "pretrain.training.lr", "fast"),
    edit("eval tasks not a list", "eval.tasks", "effbench_mc_fact"),
    edit("device gpu", "device", "gpu"),
    edit("attention mqq", "pretrain.techniques.mqa.attention", "mqq"),
    edit("int4 method hqq", "quantize.int4.method", "hqq"),
    edit("int4 group size 96", "quantize.int4.group_size", 96),
    edit("engine tgi", "inference.engine", "tgi"),
    edit("vocab size below the byte tokenizer", "data.pretrain.synthetic.vocab_size", 100),
    # --- names in grids ---------------------------------------------------------------------------
    edit("unknown technique in the grid", "pretrain.grid.xs", ["mha", "sparse"]),
    edit("unknown size in the grid", "pretrain.grid.xl", ["mha"]),
    edit("unknown export technique", "pretrain.export_hf", ["mha", "nope"]),
    edit("export of a non-exportable technique (MLA without q-LoRA: no latent norms)",
         "pretrain.techniques.mla.mla.q_lora_rank", None, r"`pretrain\.export_hf`", r"'mla'", r"q_lora_rank null"),
    edit("int4 group size vs an MLA latent rank", "pretrain.techniques.mla.mla.kv_lora_rank", 64,
         r"`quantize\.int4\.group_size`", r"model 'xs-mla'", r"mla\.kv_lora_rank 64", r"kv_b_proj"),
    edit("unknown fine-tuning method in the grid", "finetune.grid.0.methods", ["qlora"]),
    edit("unknown fine-tuning task in the grid", "finetune.grid.0.tasks", ["gsm8k"]),
    edit("unknown fine-tuning model in the grid", "finetune.grid.0.models", ["m-7b"]),
    edit("unknown precision", "quantize.precisions", ["bf16", "int8"], r"`quantize\.precisions\.1`"),
    edit("baseline not among the precisions", "quantize.baseline", "fp16", base=edited(DEFAULT, ["quantize", "precisions"],
                                                                                           ["bf16", "int4"])),
    edit("unknown table load point", "inference.table_load_point", "c64"),
    change("serving model not exported", lambda c: (c["pretrain"].update(export_hf=["mha", "mqa", "gqa", "moe"]),
                                                     c["quantize"]["models"].pop("xs-mla"),
                                                     c["quantize"]["models"]["xs-gqa"].update(pretrained="xs/mla")),
           r"`quantize\.models\.xs-gqa\.pretrained`", r"pretrain\.export_hf"),
    edit("local eval task without eval.local", "eval.local", DELETE),
    # --- unsafe names and paths ---------------------------------------------------------------------
    edit("size name with shell metacharacters", "pretrain.sizes.x$(touch PWNED)", {"num_layers": 1}, r"`pretrain\.sizes`"),
    edit("model name with a backtick", "quantize.models.a`id`", {"hf": "org/m"}, r"`quantize\.models`"),
    edit("load point name with a space", "inference.load_points.c 1",
         {"mode": "offline", "requests": 1, "prompt_len": 1, "output_len": 1}, r"`inference\.load_points`"),
    edit("results with braces (Snakemake wildcards)", "results", "out/{size}"),
    edit("empty results path", "results", ""),
    # --- cross-key checks ---------------------------------------------------------------------------
    edit("global batch not a multiple of micro batch", "pretrain.training.global_batch_size", 12),
    edit("warmup not shorter than training", "pretrain.training.warmup_steps", 150),
    edit("min_lr above lr", "pretrain.training.min_lr", 1.0),
    change("tensor parallel", lambda c: c[PT].update(parallel={"tensor_parallel": 2}),
           r"`pretrain\.parallel\.tensor_parallel`"),
    edit("lora keys on a full method", "finetune.methods.full.use_dora", True, r"`finetune\.methods\.full`"),
    edit("dora with pissa", "finetune.methods.pissa.use_dora", True, r"`finetune\.methods\.pissa`"),
    edit("no fine-tuning length", "finetune.training.num_train_epochs", DELETE),
    change("bf16 fine-tuning on a CPU", lambda c: (c.update(device="cpu"), c["finetune"]["training"].update(
        precision="bf16")), r"`finetune\.training\.precision`"),
    edit("model override for an unknown method", "finetune.models.xs-gqa.overrides", {"qlora": {"lora_rank": 4}},
         r"`finetune\.models\.xs-gqa\.overrides\.qlora`"),
    edit("hub model without a chat template", "finetune.models.xs-gqa", {"hf": "org/model"},
         r"`finetune\.models\.xs-gqa\.template`"),
    edit("model with two references", "quantize.models.xs-gqa", {"hf": "org/m", "path": "/m"}, r"`quantize\.models\.xs-gqa`"),
    edit("load point longer than max_model_len", "inference.load_points.offline.output_len", 100,
         r"`inference\.load_points\.offline`"),
    edit("concurrency above requests", "inference.load_points.c1.concurrency", 9),
    edit("offline load point with concurrency", "inference.load_points.offline.concurrency", 2),
    edit("paper: load point longer than max_model_len", "inference.load_points.c1.output_len", 4000,
         r"`inference\.load_points\.c1`", base=PAPER),
    # --- numbers the schema's comparisons let through (issue #24, item 4) --------------------------
    edit("lr NaN", "pretrain.training.lr", float("nan"), r"`pretrain\.training\.lr`: nan is not a finite number"),
    edit("weight decay infinite", "pretrain.training.weight_decay", float("inf"), r"`pretrain\.training\.weight_decay`"),
    edit("-inf where the schema checks nothing (extra_args)", "finetune.methods.lora.extra_args", {"x": float("-inf")},
         r"`finetune\.methods\.lora\.extra_args\.x`: -inf is not a finite number"),
    text_edit("lr .nan (config.yaml, with its line)", CONFIG_TEXT, "lr: 3.0e-3", "lr: .nan", r"`pretrain\.training\.lr`",
              rf"\[config/config\.yaml:{line_of(CONFIG_TEXT, 'lr: 3.0e-3')}\]", name="config/config.yaml"),
    edit("num_layers 2.0", "pretrain.sizes.xs.num_layers", 2.0,
         r"`pretrain\.sizes\.xs\.num_layers`: 2\.0 is not of type 'integer'"),
    text_edit("num_layers 2.0 (config.yaml, with its line)", CONFIG_TEXT, "xs: {num_layers: 2,", "xs: {num_layers: 2.0,",
              r"`pretrain\.sizes\.xs\.num_layers`: 2\.0 is not of type 'integer'",
              rf"\[config/config\.yaml:{line_of(CONFIG_TEXT, 'xs: {num_layers')}\]", name="config/config.yaml"),
    edit("seed 1234.0", "seed", 1234.0, r"`seed`: 1234\.0 is not of type 'integer'"),
    edit("max_steps 10.0 (integer or null)", "finetune.training.max_steps", 10.0, r"`finetune\.training\.max_steps`"),
    edit("group size 64.0", "quantize.int4.group_size", 64.0, r"`quantize\.int4\.group_size`"),
    # --- int4 groups against each model's linear layers -------------------------------------------
    edit("group size vs a pretrained FFN", "pretrain.sizes.xs.ffn_hidden_size", 320, r"`quantize\.int4\.group_size`",
         r"model 'xs-\w+'", r"ffn_hidden_size 320"),
    quantize_model("group size vs a local model's FFN", model_dir(ODD), r"`quantize\.int4\.group_size`: int4 group_size 128",
                   r"model 'extra'", r"intermediate_size 1000"),
    quantize_model("group size vs a local model's attention output", model_dir(
        {**ODD, "intermediate_size": 1024, "head_dim": 80}), r"`quantize\.int4\.group_size`",
        r"num_attention_heads × head_dim 320"),
    with_env(quantize_model("group size vs a cached hub model's FFN", cached("org/odd", ODD),
                            r"`quantize\.int4\.group_size`", r"model 'extra' \(org/odd\)", r"intermediate_size 1000")),
    # --- Hugging Face ids offline: not in the local cache ------------------------------------------
    with_env(quantize_model("offline: quantize model not in the HF cache", lambda _: {"hf": "org/absent"},
                            r"`quantize\.models\.extra\.hf`", r"org/absent is not in the local Hugging Face cache",
                            r"HF_HUB_OFFLINE"), **OFFLINE),
    with_env(change("offline: fine-tuning model not in the HF cache", _hub_finetune_model,
                    r"`finetune\.models\.hub\.hf`", r"TRANSFORMERS_OFFLINE"), TRANSFORMERS_OFFLINE="1"),
    # --- through the Snakemake CLI: rejected before any job -----------------------------------------
    cli("cli: override typo", _minimal_with(lambda c: c[PT]["sizes"]["xs"].update(
        overrides={"mqa": {"mla": {"kv_lora_rankk": 8}}})), r"pretrain\.sizes\.xs\.overrides\.mqa\.mla\.kv_lora_rankk"),
    cli("cli: seq_length 127 with max_model_len 128 (vllm)", _minimal_with(
        lambda c: (c[PT]["sizes"]["xs"].update(seq_length=127), c["inference"].update(engine="vllm"))),
        r"`inference\.vllm\.max_model_len`"),
    cli("cli: duplicate key in a --configfile", _minimal, r"raw\.yaml:3:1: duplicate key `seed`",
        raw="results: r\nseed: 1\nseed: 2\n"),
    with_env(cli("cli: offline, a hub model not in the cache", _minimal_with(
        lambda c: c["quantize"]["models"].update(hub={"hf": "org/absent"})), r"`quantize\.models\.hub\.hf`",
        r"org/absent is not in the local Hugging Face cache"), **OFFLINE),
]


def test_catalogue_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_config_is_rejected_naming_the_key(case, tmp_path):
    message = case.reject(tmp_path)
    for pattern in case.names:
        assert re.search(pattern, message), f"{pattern!r} not in:\n{message}"
