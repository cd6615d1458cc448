"""A dry run of the paper's pretraining grid: the planner's prediction for every cell, and the
launch of the sharded, expert-parallel MoE cell as the job would run it (`snakemake -n -p`)."""

from __future__ import annotations

import json
import re
import shlex

import yaml

from workflow_helpers import ROOT, snakemake

PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


def test_paper_dry_run_predicts_every_cell_and_launches_moe_sharded(tmp_path):
    c = {k: v for k, v in PAPER.items() if k not in ("finetune", "quantize", "eval", "inference")}
    c["results"] = str(tmp_path / "results")
    p = snakemake(tmp_path, c, "-n", "-p")
    out = p.stdout + p.stderr
    predicted = dict(re.findall(r"^\s+(\S+/\S+): ([\d.]+) of 96 GB", out, re.M))
    cells = {f"{size}/{t}" for size, ts in PAPER["pretrain"]["grid"].items() for t in ts}
    assert set(predicted) == cells and "1.5b/moe" in cells
    assert all(float(gb) <= 96 for gb in predicted.values()), predicted
    # The job's command: torchrun with 4 processes on the node, the settings carrying the
    # sharding and expert-parallel size the script hands to megatron-core.
    (line,) = [x for x in out.splitlines() if "pretrain.py" in x and '"technique":"moe"' in x and '"size":"1.5b"' in x]
    assert "-m effbench.torchrun --standalone --nnodes=1 --nproc-per-node=4" in line
    words = shlex.split(line[line.index("pretrain.py"):])
    settings = json.loads(words[words.index("--settings") + 1])
    assert settings["parallel"]["optimizer_sharding"] == "optimizer"
    assert settings["parallel"]["expert_parallel"] == 4 and settings["parallel"]["world_size"] == 4
