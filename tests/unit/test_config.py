"""Config validation names the key; cells expand and resolve as documented."""

import copy
from pathlib import Path

import pytest
import yaml

from config_edits import DELETE, edited

from effbench import config as cfg

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())




def test_shipped_configs_are_valid():
    p = cfg.plan(DEFAULT)
    cells, export, ft = p.pretrain, p.exported, p.finetune
    assert {c.technique for c in cells} == {"mha", "mqa", "gqa", "mla", "moe"}
    assert {c.size for c in cells} == {"xs"}
    assert {c.technique for c in export} == {"mha", "mqa", "gqa", "mla", "moe"}  # every architecture served
    assert {c.method for c in ft} == {"lora", "loraplus", "rslora", "dora", "pissa", "freeze", "full"}
    assert {c.settings["model_source"]["pretrained"] for c in ft} <= {c.name for c in export}
    paper_plan = cfg.plan(PAPER)
    paper, paper_ft = paper_plan.pretrain, paper_plan.finetune
    assert len(paper) == 23  # mqa, gqa, mla at 3 sizes; nsa at 0.5B and 1.5B; moe at 0.5B and 1.5B (sharded); abs, sinusoidal, relative, nope at 1.5B;
    # pythia, mamba, rwkv at 0.5B and 1.5B
    assert len(paper_ft) == 7 * 7 * 2


def test_paper_shapes_match_the_reference():
    cells = {c.name: c.settings["model"] for c in cfg.plan(PAPER).pretrain}
    shapes = {"0.5b": (24, 896, 14, 2, 4864), "1.5b": (28, 1536, 12, 2, 8960), "3b": (36, 2048, 16, 2, 11008)}
    for size, (layers, hidden, heads, kv, ffn) in shapes.items():
        m = cells[f"{size}/gqa"]
        assert (m["num_layers"], m["hidden_size"], m["num_attention_heads"], m["num_query_groups"],
                m["ffn_hidden_size"]) == (layers, hidden, heads, kv, ffn)
        assert cells[f"{size}/mqa"]["num_query_groups"] == 1
        assert cells[f"{size}/mla"]["mla"]["kv_lora_rank"] == hidden // 8  # latent = hidden / 8
        assert cells[f"{size}/mla"]["mla"]["qk_head_dim"] == 128
        assert m["rotary_base"] == 1e6
    moe = cells["0.5b/moe"]["moe"]
    assert moe == {"num_experts": 8, "router_topk": 2, "aux_loss_coeff": 0.01, "expert_ffn_hidden_size": 4864}
    assert "3b/moe" not in cells
    t = cfg.plan(PAPER).pretrain[0].settings["training"]
    assert (t["adam_beta1"], t["adam_beta2"], t["weight_decay"], t["lr"], t["min_lr"], t["clip_grad"],
            t["precision"]) == (0.9, 0.95, 0.1, 1e-4, 1e-5, 1.0, "bf16")


@pytest.mark.parametrize(
    "path, value, key",
    [
        (("pretrain", "grid", "xs"), ["mha", "sparse"], "pretrain.grid.xs"),  # unknown technique
        (("pretrain", "techniques", "mqa", "attention"), "mqq", "pretrain.techniques.mqa.attention"),
        (("pretrain", "grid", "xl"), ["mha"], "pretrain.grid.xl"),  # size that does not exist
        (("pretrain", "sizes", "xs", "num_layer"), 2, "pretrain.sizes.xs"),  # misspelt key
        (("pretrain", "training", "train_steps"), -5, "pretrain.training.train_steps"),
        (("pretrain", "training", "lr"), 0, "pretrain.training.lr"),
        (("seed", ), "one", "seed"),
        (("data", "pretrain", "source"), "shards", "data.pretrain"),  # shards without their settings
        (("measure", "interval_s"), DELETE, "measure"),
    ],
)
def test_errors_name_the_key(path, value, key):
    with pytest.raises(cfg.ConfigError, match=f"`{key}`"):
        cfg.plan(edited(DEFAULT, path, value))


def test_semantic_errors_name_the_cell():
    with pytest.raises(cfg.ConfigError, match="xs/gqa: gqa needs num_query_groups"):
        cfg.plan(edited(DEFAULT, ("pretrain", "sizes", "xs", "num_query_groups"), 3))
    with pytest.raises(cfg.ConfigError, match="moe.router_topk 9"):
        cfg.plan(edited(DEFAULT, ("pretrain", "techniques", "moe", "moe", "router_topk"), 9))
    # MLA without q-LoRA has no latent norms, which every HF/vLLM MLA class applies: refused at DAG
    # build with the exporter's reason and the families that export
    no_q_lora = edited(edited(DEFAULT, ("pretrain", "techniques", "mla", "mla", "q_lora_rank"), None),
                       ("pretrain", "export_hf"), ["mla"])
    with pytest.raises(cfg.ConfigError, match=r"export_hf.*'mla'.*q_lora_rank null.*exportable: .*Mixtral"):
        cfg.plan(no_q_lora)
    with pytest.raises(cfg.ConfigError, match=r"export_hf.*'moe'.*add_qkv_bias"):
        cfg.plan(edited(edited(DEFAULT, ("pretrain", "model_defaults", "add_qkv_bias"), True),
                        ("pretrain", "export_hf"), ["moe"]))


def test_a_changed_value_changes_only_its_cells():
    before = {c.name: c.settings for c in cfg.plan(DEFAULT).pretrain}
    after = {c.name: c.settings for c in cfg.plan(
        edited(DEFAULT, ("pretrain", "techniques", "mla", "mla", "kv_lora_rank"), 256)).pretrain}
    assert sorted(n for n in before if before[n] != after[n]) == ["xs/mla"]


def test_missing_paths_are_named():
    assert cfg.plan(DEFAULT).missing == []
    keys = [k for k, _ in cfg.plan(PAPER).missing]
    assert keys == ["data.pretrain.shards.path", "data.pretrain.shards.tokenizer"]


# --- fine-tuning -------------------------------------------------------------------------

def test_paper_finetune_settings_are_the_toolkits():
    cells = {c.name: c.settings for c in cfg.plan(PAPER).finetune}
    lora = cells["qwen2.5-14b/openo1/rslora"]["method_settings"]
    assert (lora["lora_rank"], lora["lora_alpha"], lora["lora_dropout"], lora["lora_target"]) == (64, 128, 0.1, "all")
    assert lora["use_rslora"] is True
    assert cells["llama-3.2-1b/openo1/loraplus"]["method_settings"]["loraplus_lr_ratio"] == 16
    t = cells["mistral-small-24b/medical-o1/full"]["training"]
    assert (t["cutoff_len"], t["lr_scheduler_type"], t["warmup_ratio"]) == (2048, "cosine", 0.1)
    assert t["gradient_accumulation_steps"] == 4  # the model's own training settings win (× 4 GPUs: 16 samples)
    assert cells["mistral-small-24b/medical-o1/full"]["method_settings"]["deepspeed"].endswith(
        "ds_z3_offload_optimizer.json")  # the model's override: ZeRO-3 alone does not fit (docs/finetune-parallel.md)
    assert cells["qwen2.5-14b/medical-o1/full"]["method_settings"]["deepspeed"].endswith("ds_z3.json")


def test_unknown_finetune_method_names_the_key():
    c = copy.deepcopy(DEFAULT)
    c["finetune"]["grid"][0]["methods"].append("qlora")
    with pytest.raises(cfg.ConfigError, match=r"config key `finetune.grid.0.methods`: unknown method 'qlora'"):
        cfg.plan(c)


def test_finetune_model_needs_an_exported_pretraining_cell():
    c = edited(edited(DEFAULT, ("pretrain", "export_hf"), ["mha", "mqa", "gqa", "moe"]),
               ("finetune", "models", "xs-gqa", "pretrained"), "xs/mla")
    del c["quantize"]["models"]["xs-mla"]
    with pytest.raises(cfg.ConfigError, match=r"config key `finetune.models.xs-gqa.pretrained`: 'xs/mla' is not"):
        cfg.plan(c)


def test_finetune_model_needs_exactly_one_source():
    c = edited(DEFAULT, ("finetune", "models", "xs-gqa"), {"template": "default"})
    with pytest.raises(cfg.ConfigError, match=r"config key `finetune.models.xs-gqa`"):
        cfg.plan(c)


def test_lora_keys_on_a_full_method_are_an_error():
    c = edited(DEFAULT, ("finetune", "methods", "full", "use_dora"), True)
    with pytest.raises(cfg.ConfigError, match=r"config key `finetune.methods.full`: use_dora"):
        cfg.plan(c)


def test_missing_finetune_model_path_is_listed():
    c = copy.deepcopy(DEFAULT)
    c["finetune"]["models"]["local"] = {"path": "/nowhere/llama", "template": "llama3"}
    assert ("finetune.models.local.path", "/nowhere/llama") in cfg.plan(c).missing


def test_a_method_edit_changes_only_that_methods_cells():
    before = {c.name: c.settings for c in cfg.plan(DEFAULT).finetune}
    after = {c.name: c.settings for c in cfg.plan(
        edited(DEFAULT, ("finetune", "methods", "dora", "lora_rank"), 16)).finetune}
    assert sorted(n for n in before if before[n] != after[n]) == ["xs-gqa/synthetic/dora"]


def test_llamafactory_args_of_a_cell():
    from effbench.finetune.args import llamafactory_args

    cell = next(c for c in cfg.plan(DEFAULT).finetune if c.name == "xs-gqa/synthetic/loraplus")
    a = llamafactory_args(cell.settings, model_path="m", dataset_dir=Path("d"),
                          datasets={"train": "tr", "eval": "ev"}, output_dir=Path("o"), device="cpu")
    assert a["stage"] == "sft" and a["finetuning_type"] == "lora" and a["loraplus_lr_ratio"] == 16
    assert a["dataset"] == "tr" and a["eval_dataset"] == "ev" and a["do_eval"] is True
    assert a["use_cpu"] is True and a["bf16"] is False and a["logging_steps"] == 1
    assert "precision" not in a and "threads" not in a


def test_parallel_layout_defaults_and_launch():
    cell = cfg.plan(DEFAULT).pretrain[0]
    assert cell.settings["parallel"] == {"nodes": 1, "gpus_per_node": 1, "tensor_parallel": 1, "world_size": 1,
                                         "data_parallel": 1, "pipeline_parallel": 1, "optimizer_sharding": "none",
                                         "expert_parallel": 1}
    assert cfg.launch_command("/env/bin/python", cell.settings["parallel"]) == "/env/bin/python"
    paper = cfg.plan(PAPER).pretrain[0].settings["parallel"]
    assert paper["world_size"] == paper["gpus_per_node"] == 4  # one GH200 node: 4 superchips
    assert cfg.launch_command("py", paper) == "py -m effbench.torchrun --standalone --nnodes=1 --nproc-per-node=4"
    two_nodes = cfg.launch_command("py", {**paper, "nodes": 2})
    assert two_nodes.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1")
    assert "--nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d" in two_nodes


def test_parallel_layout_errors_name_the_key():
    with pytest.raises(cfg.ConfigError, match=r"`pretrain.parallel.tensor_parallel`: 2 is not supported"):
        cfg.plan(edited(DEFAULT, ["pretrain", "parallel"], {"tensor_parallel": 2}))
    # global batch 8 = micro 8 × data parallel 1; with 2 processes it no longer divides
    with pytest.raises(cfg.ConfigError, match=r"`pretrain.training.global_batch_size`: 8 is not a multiple"):
        cfg.plan(edited(DEFAULT, ["pretrain", "parallel"], {"gpus_per_node": 2}))
    with pytest.raises(cfg.ConfigError, match=r"`pretrain.parallel.nodes`"):
        cfg.plan(edited(DEFAULT, ["pretrain", "parallel"], {"nodes": 0}))


def test_stage_environments():
    assert cfg.stage_python({}, "pretrain").endswith(".venvs/pretrain/bin/python")
    assert cfg.stage_python({"pretrain": "/conda/envs/p/bin/python"}, "pretrain") == \
        "/conda/envs/p/bin/python"
    assert [p.name for p in cfg.env_files("pretrain")] == ["pretrain.lock.txt", "pretrain.yaml"]
    for stage in cfg.STAGES:
        assert (ROOT / "envs" / f"{stage}.yaml").exists()  # a conda file for the cluster, per stage
    with pytest.raises(cfg.ConfigError, match="unknown stage environment"):
        cfg.stage_python({}, "nope")


def test_multi_node_step_gets_the_nodes_cpus_and_gpus():
    layout = {"nodes": 2, "gpus_per_node": 4, "tensor_parallel": 1}
    cmd = cfg.launch_command("py", layout, cpus_per_node=64, gpus=True)
    assert "--ntasks-per-node=1 --cpus-per-task=64 --gres=gpu:4 --kill-on-bad-exit=1 py -m effbench.torchrun" in cmd


# --- defaults and the model reference ---------------------------------------------------------

def test_defaults_come_from_the_schema_and_the_input_is_not_changed():
    raw = edited(DEFAULT, ("inference", "vllm"), {"max_model_len": 128})
    valid = cfg.validate(raw)
    assert "max_num_seqs" not in raw["inference"]["vllm"]  # a copy is filled, not the caller's config
    assert valid["inference"]["vllm"]["max_num_seqs"] == 256 and valid["inference"]["vllm"]["max_model_len"] == 128
    assert valid["pretrain"]["parallel"] == {"nodes": 1, "gpus_per_node": 1, "tensor_parallel": 1,
                                             "optimizer_sharding": "none", "expert_parallel": 1}
    assert cfg.defaults_of("inference")["int4_dtype"] == "bf16"


def test_a_layered_default_never_overrides_a_lower_layer():
    # paper.yaml: add_qkv_bias true in model_defaults; finetune threads 8 in finetune.training only
    p = cfg.plan(PAPER)
    assert all(c.settings["model"]["add_qkv_bias"] is True for c in p.pretrain
               if "family" not in c.settings["model"])  # a transformers family has no such key
    assert all(c.settings["training"]["threads"] == 8 for c in p.finetune)
    c = edited(DEFAULT, ("pretrain", "model_defaults"), {k: v for k, v in DEFAULT["pretrain"]["model_defaults"].items()
                                                           if k != "add_qkv_bias"})
    c["pretrain"]["techniques"]["mha"]["add_qkv_bias"] = True
    cells = {x.name: x.settings["model"]["add_qkv_bias"] for x in cfg.plan(c).pretrain}
    assert cells["xs/mha"] is True and cells["xs/gqa"] is False


def test_template_defaults_for_the_pipelines_own_export_only():
    c = edited(DEFAULT, ("finetune", "models", "xs-gqa"), {"pretrained": "xs/gqa"})
    assert {x.settings["template"] for x in cfg.plan(c).finetune if x.model == "xs-gqa"} == {"default"}
    c = edited(DEFAULT, ("finetune", "models", "xs-gqa"), {"hf": "org/model"})
    with pytest.raises(cfg.ConfigError, match=r"config key `finetune.models.xs-gqa.template`"):
        cfg.plan(c)


def test_one_model_reference_for_finetuning_and_serving():
    c = edited(DEFAULT, ("finetune", "models", "xs-gqa"), {"hf": "org/model", "template": "llama3"})
    c["quantize"]["models"]["xs-gqa"] = {"hf": "org/model"}
    p = cfg.plan(c)
    ft = next(x for x in p.finetune if x.model == "xs-gqa")
    q = next(x for x in p.serve.quantize if x.model == "xs-gqa")
    assert ft.source == q.source == cfg.ModelSource("hf", "org/model")
    assert ft.settings["model_source"] == {"hf": "org/model"} and q.settings["source"] == {"kind": "hf", "ref": "org/model"}
    with pytest.raises(cfg.ConfigError, match=r"config key `finetune.models.xs-gqa`"):  # the old spelling
        cfg.plan(edited(DEFAULT, ("finetune", "models", "xs-gqa"), {"hf_id": "org/model", "template": "llama3"}))


def test_an_oversized_pretraining_cell_is_refused_before_any_job():
    # The paper grid fits one GH200 GPU (96 GB) per the planner, MoE 1.5B×8 included (sharded)...
    p = cfg.plan(PAPER)
    assert "1.5b/moe" in {c.name for c in p.pretrain}
    assert len(p.memory) == len(p.pretrain) and all(v.fits for v in p.memory)
    assert max(v.predicted_gb for v in p.memory) < 96
    # ...but not with full replicas on every rank: refused at DAG build, naming the cell, its
    # predicted and allowed GB, and the settings the stage runs that would make it fit.
    replicas = edited(PAPER, ("pretrain", "parallel"), {"nodes": 1, "gpus_per_node": 4})
    with pytest.raises(cfg.ConfigError) as e:
        cfg.plan(replicas)
    msg = str(e.value)
    assert "`cluster.gpu_memory_gb`" in msg and "pretrain cell 1.5b/moe: predicted peak" in msg and "allowed 96 GB" in msg
    assert "set pretrain.parallel.expert_parallel: 4 (predicted 83.6 GB)" in msg
    assert "1.5b/gqa" not in msg
    # A fit that needs a knob the stage lacks (recompute) is named as such.
    tight = edited(replicas, ("cluster", "gpu_memory_gb"), 58)
    with pytest.raises(cfg.ConfigError, match=r"1.5b/moe: .*pretrain.training.recompute: full .*does not implement yet"):
        cfg.plan(tight)
    # A cell that a smaller micro-batch fixes names that key.
    big = edited(PAPER, ("pretrain", "training", "micro_batch_size"), 4)
    with pytest.raises(cfg.ConfigError, match=r"1.5b/moe: .*set pretrain.training.micro_batch_size: 2"):
        cfg.plan(big)
    # No GPU size given (the embedded default): no check, nothing predicted.
    assert cfg.plan(DEFAULT).memory == []
