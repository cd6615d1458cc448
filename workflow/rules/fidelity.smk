for _i, _precisions in enumerate(SERVE.precision_sets):
    # One rule per set of precisions a model is served at (the paper's; with quantize.beyond_paper's,
    # for its models): a rule's outputs are the same for every model it matches.
    rule:
        """Score every served precision of one model and its baseline on held-out text through the
        serving engine: held-out perplexity, KL of next-token distributions, top-1 agreement
        (docs/fidelity.md). One job per model: the baseline's distributions are extracted once."""
        input:
            models=model_checkpoints,
            held_out=rules.pretrain_data.output.val,
            meta=rules.pretrain_data.output.meta,
        name:
            "fidelity" if _i == 0 else "fidelity_beyond_paper"
        output:
            expand(str(FIDELITY_FILE), model="{model}", precision=_precisions),
        wildcard_constraints:
            model=models_pattern(SERVE.models_with(_precisions)),
        params:
            settings=fidelity_settings,
            env=stage_env("inference"),
            model_dirs=model_dirs_arg,
            data_dir=folder_of("input", "meta"),
            out_dir=lambda w: RESULTS / "fidelity" / w.model,
        log:
            LOGS / "fidelity" / "{model}.log",
        benchmark:
            BENCH / "fidelity" / "{model}.tsv"
        threads: stage_threads("eval")  # untimed scoring, as the eval jobs: it may run beside one
        resources:
            **stage_resources("fidelity"),
        shell:
            "{STAGE_PYTHON[inference]} {SCRIPTS:q}/fidelity.py --settings {params.settings:q} --model-dirs {params.model_dirs}"
            " --data-dir {params.data_dir:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
