rule aggregate_pretrain:
    """The paper's pretraining table, the leaderboard and the Pareto plots."""
    input:
        records=pretrain_records,
    output:
        manifest=RESULTS / "pretrain.manifest.json",
        table=RESULTS / "tables" / "pretrain.md",
    params:
        env=stage_env("driver"),
    log:
        LOGS / "aggregate" / "pretrain.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage pretrain --out {RESULTS:q} --records {input.records:q} > {log:q} 2>&1"


rule aggregate_finetune:
    """The paper's PEFT table (model × method: loss, AMU, PCU, AL, ST, AEC), leaderboard, Pareto plots."""
    input:
        finetune_records,
    output:
        manifest=RESULTS / "finetune.manifest.json",
        table=RESULTS / "tables" / "finetune.md",
    log:
        LOGS / "aggregate" / "finetune.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage finetune --out {RESULTS:q} --records {input:q} > {log:q} 2>&1"


rule aggregate_quantize:
    """The quantized checkpoints: size on disk, accuracy and both MCRs per model × precision."""
    input:
        records=quantize_records,
        scores=eval_scores,
    output:
        manifest=RESULTS / "quantize.manifest.json",
        table=RESULTS / "tables" / "quantize.md",
    params:
        baseline=SERVE.baseline,
    log:
        LOGS / "aggregate" / "quantize.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage quantize --out {RESULTS:q} --records {input.records:q}"
        " --scores {input.scores:q} --baseline {params.baseline} > {log:q} 2>&1"


rule aggregate_inference:
    """The paper's Table 9, per-task accuracy, latency per load point, Pareto and throughput-latency plots."""
    input:
        records=inference_records,
        quantize=quantize_records,
        scores=eval_scores,
    output:
        manifest=RESULTS / "inference.manifest.json",
        table=RESULTS / "tables" / "inference.md",
        tasks=RESULTS / "tables" / "inference_tasks.md",
        latency=RESULTS / "tables" / "inference_latency.md",
    params:
        baseline=SERVE.baseline,
        table_load_point=SERVE.table_load_point,
    log:
        LOGS / "aggregate" / "inference.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/aggregate.py --stage inference --out {RESULTS:q} --records {input.records:q}"
        " --quantize-records {input.quantize:q} --scores {input.scores:q} --baseline {params.baseline}"
        " --table-load-point {params.table_load_point} > {log:q} 2>&1"


rule summary:
    """One page linking every table, leaderboard and plot."""
    input:
        stage_manifests,
    output:
        RESULTS / "summary.md",
    log:
        LOGS / "aggregate" / "summary.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/summarize.py --out {RESULTS:q} --manifests {input:q} > {log:q} 2>&1"
