rule eval_tasks:
    """The offline multiple-choice tasks (lm-evaluation-harness task files) from the synthetic world."""
    output:
        EVAL_TASKS / "tasks.json",
    params:
        per_task=eval_items_per_task(),
        seed=SEED,
        world=WORLD_VERSION,  # a new world generator remakes the data
        out_dir=folder_of("output"),
    log:
        LOGS / "data" / "eval_tasks.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} {SCRIPTS:q}/make_eval_tasks.py --items-per-task {params.per_task:q} --seed {params.seed:q}"
        " --out-dir {params.out_dir:q} > {output:q} 2> {log:q}"


rule evaluate:
    """Score one model × precision with lm-evaluation-harness (per task, with stderr)."""
    input:
        model=rules.quantize.output.model,
        tasks=eval_task_inputs,
    output:
        RESULTS / "eval" / "{model}" / "{precision}" / "scores.json",
    params:
        env=stage_env("inference"),
        settings=cell_settings(EVALS, "model", "precision"),
        include=eval_include_arg(),
        model_dir=folder_of("input", "model"),
    log:
        LOGS / "eval" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "eval" / "{model}" / "{precision}.tsv"
    threads: stage_threads("eval")
    resources:
        **stage_resources("eval"),
    shell:
        "{STAGE_PYTHON[inference]} {SCRIPTS:q}/evaluate.py --settings {params.settings:q} --model-dir {params.model_dir:q}"
        " {params.include} --out {output:q} > {log:q} 2>&1"


rule inference:
    """Serve every closed-loop load point of one model × precision with one engine load; one record
    per point. The engine is decided per model from all its served precisions (one engine per
    model): this precision's checkpoint, the others by name, so serving neither waits for nor
    re-runs with the model's other checkpoints."""
    input:
        model=rules.quantize.output.model,
    output:
        records=expand(RESULTS / "inference" / "{{model}}" / "{{precision}}" / "{load_point}" / "record.parquet",
                       load_point=CLOSED_POINTS),
        samples=expand(RESULTS / "inference" / "{{model}}" / "{{precision}}" / "{load_point}" / "samples.parquet",
                       load_point=CLOSED_POINTS),
    params:
        env=stage_env("inference"),
        settings=serving_job_settings,
        model_dir=folder_of("input", "model"),
        precisions=model_precisions_arg,
        out_dir=lambda w: RESULTS / "inference" / w.model / w.precision,
    log:
        LOGS / "inference" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "inference" / "{model}" / "{precision}.tsv"
    threads: stage_threads("inference")
    priority: MEASURED_PRIORITY
    resources:
        **stage_resources("inference"),
    shell:
        "{STAGE_PYTHON[inference]} {SCRIPTS:q}/inference.py --settings {params.settings:q} --config-hash {CONFIG_HASH:q}"
        " --model-dir {params.model_dir:q} --model-precisions {params.precisions} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule inference_open_loop:
    """Serve the open-loop load points (requests arriving at a rate; a sweep's rates) of one model ×
    precision of inference.open_loop, with one engine load of its own: one record per point."""
    input:
        model=rules.quantize.output.model,
    output:
        records=expand(RESULTS / "inference" / "{{model}}" / "{{precision}}" / "{load_point}" / "record.parquet",
                       load_point=OPEN_POINTS),
        samples=expand(RESULTS / "inference" / "{{model}}" / "{{precision}}" / "{load_point}" / "samples.parquet",
                       load_point=OPEN_POINTS),
    wildcard_constraints:
        model=models_pattern(SERVE.open_loop_names("model")),
        precision="|".join(re.escape(p) for p in SERVE.open_loop_names("precision")) or "(?!)",
    params:
        env=stage_env("inference"),
        settings=open_loop_job_settings,
        model_dir=folder_of("input", "model"),
        precisions=model_precisions_arg,
        out_dir=lambda w: RESULTS / "inference" / w.model / w.precision,
    log:
        LOGS / "inference" / "{model}" / "{precision}.open_loop.log",
    benchmark:
        BENCH / "inference" / "{model}" / "{precision}.open_loop.tsv"
    threads: stage_threads("inference")
    priority: MEASURED_PRIORITY
    resources:
        **stage_resources("inference"),
    shell:
        "{STAGE_PYTHON[inference]} {SCRIPTS:q}/inference.py --settings {params.settings:q} --config-hash {CONFIG_HASH:q}"
        " --model-dir {params.model_dir:q} --model-precisions {params.precisions} --out-dir {params.out_dir:q} > {log:q} 2>&1"
