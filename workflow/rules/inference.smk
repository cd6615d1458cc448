EVAL_TASKS = RESULTS / "data" / "eval"
EVALS = {(c.model, c.precision): c for c in SERVE.eval}
LOAD_POINTS = list((config.get("inference") or {}).get("load_points", {}))
LOCAL_EVAL = next((c.settings["local"] for c in SERVE.eval if c.settings["local"]), None)

localrules: eval_tasks


rule eval_tasks:
    """The offline multiple-choice tasks (lm-evaluation-harness task files) from the synthetic world."""
    output:
        EVAL_TASKS / "tasks.json",
    params:
        per_task=(LOCAL_EVAL or {}).get("items_per_task", 0),
        seed=config["seed"],
    log:
        LOGS / "data" / "eval_tasks.log",
    shell:
        "{DRIVER_PYTHON} {SCRIPTS}/make_eval_tasks.py --items-per-task {params.per_task} --seed {params.seed}"
        " --out-dir $(dirname {output:q}) > {output:q} 2> {log:q}"


rule evaluate:
    """Score one model × precision with lm-evaluation-harness (per task, with stderr)."""
    input:
        model=rules.quantize.output.model,
        tasks=[rules.eval_tasks.output[0]] if LOCAL_EVAL else [],
        env=stage_env("inference"),
    output:
        RESULTS / "eval" / "{model}" / "{precision}" / "scores.json",
    params:
        settings=lambda w: json.dumps(EVALS[(w.model, w.precision)].settings, sort_keys=True),
        include=f"--include-path {shlex.quote(str(EVAL_TASKS))}" if LOCAL_EVAL else "",
        run=stage_shell("inference"),
    log:
        LOGS / "eval" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "eval" / "{model}" / "{precision}.tsv"
    threads: (config.get("eval") or {}).get("threads", 1)
    resources:
        **gpu_resources({"nodes": 1, "gpus_per_node": 1}),
    shell:
        "{params.run} {SCRIPTS}/evaluate.py --settings {params.settings:q} --model-dir $(dirname {input.model:q})"
        " {params.include} --out {output:q} > {log:q} 2>&1"


rule inference:
    """Serve every load point of one model × precision with one engine load; one record per point."""
    input:
        model=rules.quantize.output.model,
        env=stage_env("inference"),
    output:
        records=expand(RESULTS / "inference" / "{{model}}" / "{{precision}}" / "{load_point}" / "record.parquet",
                       load_point=LOAD_POINTS),
        samples=expand(RESULTS / "inference" / "{{model}}" / "{{precision}}" / "{load_point}" / "samples.parquet",
                       load_point=LOAD_POINTS),
    params:
        settings=lambda w: json.dumps(SERVE.serving_job(w.model, w.precision), sort_keys=True),
        out_dir=lambda w: RESULTS / "inference" / w.model / w.precision,
        run=stage_shell("inference"),
    log:
        LOGS / "inference" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "inference" / "{model}" / "{precision}.tsv"
    threads: (config.get("inference") or {}).get("threads", 1)
    resources:
        **gpu_resources({"nodes": 1, "gpus_per_node": 1}),
    shell:
        "{params.run} {SCRIPTS}/inference.py --settings {params.settings:q} --config-hash {CONFIG_HASH}"
        " --model-dir $(dirname {input.model:q}) --out-dir {params.out_dir:q} > {log:q} 2>&1"


def eval_scores():
    return [rules.evaluate.output[0].format(model=c.model, precision=c.precision) for c in SERVE.eval]


def inference_records():
    return [RESULTS / "inference" / c.model / c.precision / c.load_point / "record.parquet" for c in SERVE.inference]
