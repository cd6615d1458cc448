localrules: aggregate_pretrain, summary


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


rule summary:
    """One page linking every table, leaderboard and plot."""
    input:
        rules.aggregate_pretrain.output.manifest,
    output:
        RESULTS / "summary.md",
    log:
        LOGS / "aggregate" / "summary.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/summarize.py --out {RESULTS:q} --manifests {input:q} > {log:q} 2>&1"
