# The outputs are update(): Snakemake keeps the previous ones while the job runs and puts them
# back if it fails; scripts/aggregate.py replaces the whole set at once, or none of it.


rule aggregate_pretrain:
    """The paper's pretraining table, the leaderboard and the Pareto plots."""
    input:
        records=pretrain_records,
    output:
        manifest=update(RESULTS / "pretrain.manifest.json"),
        table=update(RESULTS / "tables" / "pretrain.md"),
    params:
        skip=skip_bad_records_arg(),
    log:
        LOGS / "aggregate" / "pretrain.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS:q}/aggregate.py --stage pretrain --out {RESULTS:q} --records {input.records:q} {params.skip} > {log:q} 2>&1"


rule aggregate_finetune:
    """The paper's PEFT table (model × method: loss, AMU, PCU, AL, ST, AEC), leaderboard, Pareto plots."""
    input:
        finetune_records,
    output:
        manifest=update(RESULTS / "finetune.manifest.json"),
        table=update(RESULTS / "tables" / "finetune.md"),
    params:
        skip=skip_bad_records_arg(),
    log:
        LOGS / "aggregate" / "finetune.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS:q}/aggregate.py --stage finetune --out {RESULTS:q} --records {input:q} {params.skip} > {log:q} 2>&1"


rule aggregate_quantize:
    """The quantized checkpoints: size on disk, accuracy and both MCRs per model × precision."""
    input:
        records=quantize_records,
        scores=eval_scores,
        fidelity=fidelity_files,
    output:
        manifest=update(RESULTS / "quantize.manifest.json"),
        table=update(RESULTS / "tables" / "quantize.md"),
    params:
        baseline=SERVE.baseline,
        skip=skip_bad_records_arg(),
    log:
        LOGS / "aggregate" / "quantize.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS:q}/aggregate.py --stage quantize --out {RESULTS:q} --records {input.records:q}"
        " --scores {input.scores:q} --fidelity {input.fidelity:q} --baseline {params.baseline:q} {params.skip}"
        " > {log:q} 2>&1"


rule aggregate_inference:
    """The paper's Table 9, per-task accuracy, latency per load point, Pareto and throughput-latency plots."""
    input:
        records=inference_records,
        quantize=quantize_records,
        scores=eval_scores,
        fidelity=fidelity_files,
    output:
        manifest=update(RESULTS / "inference.manifest.json"),
        table=update(RESULTS / "tables" / "inference.md"),
        tasks=update(RESULTS / "tables" / "inference_tasks.md"),
        latency=update(RESULTS / "tables" / "inference_latency.md"),
    params:
        baseline=SERVE.baseline,
        table_load_point=SERVE.table_load_point,
        skip=skip_bad_records_arg(),
    log:
        LOGS / "aggregate" / "inference.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS:q}/aggregate.py --stage inference --out {RESULTS:q} --records {input.records:q}"
        " --quantize-records {input.quantize:q} --scores {input.scores:q} --fidelity {input.fidelity:q}"
        " --baseline {params.baseline:q}"
        " --table-load-point {params.table_load_point:q} {params.skip} > {log:q} 2>&1"


rule summary:
    """One page: the headline findings, links to the report and the recommendation, then every
    table, leaderboard and plot. Runs after the report so that every link it writes resolves."""
    input:
        manifests=stage_manifests,
        report=RESULTS / "report.html",
        recommendation=RESULTS / "decision" / "recommend.md",
    output:
        RESULTS / "summary.md",
    log:
        LOGS / "aggregate" / "summary.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS:q}/summarize.py --out {RESULTS:q} --manifests {input.manifests:q} > {log:q} 2>&1"
