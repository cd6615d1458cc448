rule finetune_data:
    """Make (synthetic) or describe (hf, local) one fine-tuning task for LlamaFactory."""
    output:
        meta=DATA_FINETUNE / "{task}" / "task.json",
        info=DATA_FINETUNE / "{task}" / "dataset_info.json",
    params:
        env=stage_env("finetune"),
        settings=task_settings,
        seed=SEED,
        world=WORLD_VERSION,  # a new world generator remakes the data
        out_dir=folder_of("output", "meta"),
    log:
        LOGS / "data" / "finetune" / "{task}.log",
    resources:
        **light_resources(),
    shell:
        "{STAGE_PYTHON[finetune]} {SCRIPTS:q}/make_sft_task.py --name {wildcards.task:q} --settings {params.settings:q}"
        " --seed {params.seed:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule finetune:
    """Fine-tune one model × task × method cell with LlamaFactory, measured; one record per run.
    Several GPUs: torchrun starts one LlamaFactory process per GPU (data parallel; ZeRO with a
    DeepSpeed config), as LlamaFactory's own CLI does.

    Out of memory is a result: the record says `oom` with the settings tried, and the job succeeds.
    """
    input:
        task=rules.finetune_data.output.meta,
        model=finetune_model_inputs,
    output:
        record=FINETUNE_DIR / "{model}" / "{task}" / "{method}" / "record.parquet",
        samples=FINETUNE_DIR / "{model}" / "{task}" / "{method}" / "samples.parquet",
    params:
        env=stage_env("finetune"),
        settings=cell_settings(FINETUNE, "model", "task", "method"),
        model_path=finetune_model_path,
        data_dir=folder_of("input", "task"),
        output_dir=lambda w: FINETUNE_DIR / w.model / w.task / w.method / "adapter",
        run=stage_launch("finetune", finetune_layout, finetune_needs_torchrun),
    log:
        LOGS / "finetune" / "{model}" / "{task}" / "{method}.log",
    benchmark:
        BENCH / "finetune" / "{model}" / "{task}" / "{method}.tsv"
    threads: stage_threads("finetune")
    priority: MEASURED_PRIORITY
    resources:
        **stage_resources("finetune", finetune_layout),  # finetune.parallel: GPUs per cell
    shell:
        "{params.run} {SCRIPTS:q}/finetune.py --settings {params.settings:q} --config-hash {CONFIG_HASH:q}"
        " --model-path {params.model_path:q} --data-dir {params.data_dir:q}"
        " --output-dir {params.output_dir:q} --record {output.record:q} --samples {output.samples:q} > {log:q} 2>&1"
