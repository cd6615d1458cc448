localrules: aggregate_pretrain, aggregate_finetune, summary


def pretrain_records(wildcards=None):
    return [rules.pretrain.output.record.format(size=c.size, technique=c.technique) for c in PRETRAIN_CELLS]


rule aggregate_pretrain:
    """The paper's pretraining table, the leaderboard and the Pareto plots."""
    input:
        records=pretrain_records,
        env=stage_env("driver"),
    output:
        manifest=RESULTS / "pretrain.manifest.json",
        table=RESULTS / "tables" / "pretrain.md",
    log:
        LOGS / "aggregate" / "pretrain.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage pretrain --out {RESULTS:q} --records {input.records:q} > {log:q} 2>&1"


def finetune_records(wildcards=None):
    return [rules.finetune.output.record.format(model=c.model, task=c.task, method=c.method) for c in FINETUNE_CELLS]


rule aggregate_finetune:
    """The paper's PEFT table (model × method: loss, AMU, PCU, AL, ST, AEC), leaderboard, Pareto plots."""
    input:
        finetune_records,
    output:
        manifest=RESULTS / "finetune.manifest.json",
        table=RESULTS / "tables" / "finetune.md",
    log:
        LOGS / "aggregate" / "finetune.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage finetune --out {RESULTS:q} --records {input:q} > {log:q} 2>&1"


def stage_manifests(wildcards=None):
    out = [rules.aggregate_pretrain.output.manifest]
    if FINETUNE_CELLS:
        out.append(rules.aggregate_finetune.output.manifest)
    return out


rule summary:
    """One page linking every table, leaderboard and plot."""
    input:
        stage_manifests,
    output:
        RESULTS / "summary.md",
    log:
        LOGS / "aggregate" / "summary.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/summarize.py --out {RESULTS:q} --manifests {input:q} > {log:q} 2>&1"
