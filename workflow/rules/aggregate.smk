localrules: aggregate_pretrain, aggregate_finetune, aggregate_quantize, aggregate_inference, summary


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


BASELINE = (config.get("quantize") or {}).get("baseline", "")


rule aggregate_quantize:
    """The quantized checkpoints: size on disk, accuracy and both MCRs per model × precision."""
    input:
        records=quantize_records(),
        scores=eval_scores(),
        fidelity=fidelity_files(),  # read from RESULTS/fidelity by effbench.fidelity.table
    output:
        manifest=RESULTS / "quantize.manifest.json",
        table=RESULTS / "tables" / "quantize.md",
    params:
        baseline=BASELINE,
    log:
        LOGS / "aggregate" / "quantize.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage quantize --out {RESULTS:q} --records {input.records:q}"
        " --scores {input.scores:q} --baseline {params.baseline} > {log:q} 2>&1"


rule aggregate_inference:
    """The paper's Table 9, per-task accuracy, latency per load point, Pareto and throughput-latency plots."""
    input:
        records=inference_records(),
        quantize=quantize_records(),
        scores=eval_scores(),
        fidelity=fidelity_files(),  # read from RESULTS/fidelity by effbench.fidelity.table
    output:
        manifest=RESULTS / "inference.manifest.json",
        table=RESULTS / "tables" / "inference.md",
        tasks=RESULTS / "tables" / "inference_tasks.md",
        latency=RESULTS / "tables" / "inference_latency.md",
    params:
        baseline=BASELINE,
        table_load_point=(config.get("inference") or {}).get("table_load_point", ""),
    log:
        LOGS / "aggregate" / "inference.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage inference --out {RESULTS:q} --records {input.records:q}"
        " --quantize-records {input.quantize:q} --scores {input.scores:q} --baseline {params.baseline}"
        " --table-load-point {params.table_load_point} > {log:q} 2>&1"


def stage_manifests():
    out = [rules.aggregate_pretrain.output.manifest]
    if FINETUNE_CELLS:
        out.append(rules.aggregate_finetune.output.manifest)
    if SERVE.quantize:
        out.append(rules.aggregate_quantize.output.manifest)
    if SERVE.inference:
        out.append(rules.aggregate_inference.output.manifest)
    return out


rule summary:
    """One page linking every table, leaderboard and plot."""
    input:
        stage_manifests(),
    output:
        RESULTS / "summary.md",
    log:
        LOGS / "aggregate" / "summary.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/summarize.py --out {RESULTS:q} --manifests {input:q} > {log:q} 2>&1"
