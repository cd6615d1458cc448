rule fidelity:
    """Score one model × precision and its baseline on held-out text through the serving engine:
    held-out perplexity, KL of next-token distributions, top-1 agreement (docs/fidelity.md)."""
    input:
        model=rules.quantize.output.model,
        baseline=fidelity_baseline_model,
        held_out=rules.pretrain_data.output.val,
        meta=rules.pretrain_data.output.meta,
    output:
        RESULTS / "fidelity" / "{model}" / "{precision}" / "fidelity.json",
    params:
        settings=fidelity_settings,
        env=stage_env("inference"),
        model_dir=folder_of("input", "model"),
        baseline_dir=folder_of("input", "baseline"),
        data_dir=folder_of("input", "meta"),
    log:
        LOGS / "fidelity" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "fidelity" / "{model}" / "{precision}.tsv"
    threads: stage_threads("inference")
    resources:
        **stage_resources("fidelity"),
    shell:
        "{STAGE_PYTHON[inference]} {SCRIPTS:q}/fidelity.py --settings {params.settings:q} --model-dir {params.model_dir:q}"
        " --baseline-dir {params.baseline_dir:q} --data-dir {params.data_dir:q} --out {output:q} > {log:q} 2>&1"
