# From measurements to a decision (docs/decision.md): Pareto fronts across objectives and axes,
# scaling fits against model size, and `recommend` for the config's `recommend:` constraints.
# It reads the same records as the aggregation (named here, never globbed) once every stage is
# aggregated; its outputs are published all at once (effbench.aggregate.publish), hence update().


rule decision:
    """Pareto fronts (results/decision/pareto.*), scaling fits (scaling.*), recommendation (recommend.*)."""
    input:
        manifests=stage_manifests,
        pretrain=pretrain_records,
        finetune=finetune_records,
        quantize=quantize_records,
        inference=inference_records,
        scores=eval_scores,
        fidelity=fidelity_files,
    output:
        manifest=update(RESULTS / "decision.manifest.json"),
        pareto=update(RESULTS / "decision" / "pareto.md"),
        pareto_csv=update(RESULTS / "decision" / "pareto.csv"),
        scaling=update(RESULTS / "decision" / "scaling.md"),
        recommend=update(RESULTS / "decision" / "recommend.md"),
        recommend_json=update(RESULTS / "decision" / "recommend.json"),
    params:
        constraints=recommend_settings(),
        baseline=SERVE.baseline,
        table_load_point=SERVE.table_load_point,
    log:
        LOGS / "decision" / "decision.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} -m effbench.decision.build --results {RESULTS:q} --pretrain-records {input.pretrain:q}"
        " --finetune-records {input.finetune:q} --quantize-records {input.quantize:q}"
        " --inference-records {input.inference:q} --scores {input.scores:q} --fidelity {input.fidelity:q}"
        # `=`: without serving, baseline and load point are empty, and an empty quoted value vanishes
        " --baseline={params.baseline:q} --table-load-point={params.table_load_point:q}"
        " --constraints {params.constraints:q} > {log:q} 2>&1"
