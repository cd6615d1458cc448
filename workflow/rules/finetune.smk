DATA_FINETUNE = RESULTS / "data" / "finetune"
FINETUNE_DIR = RESULTS / "finetune"


rule finetune_data:
    """Make (synthetic) or describe (hf, local) one fine-tuning task for LlamaFactory."""
    input:
        env=stage_env("finetune"),
    output:
        meta=DATA_FINETUNE / "{task}" / "task.json",
        info=DATA_FINETUNE / "{task}" / "dataset_info.json",
    params:
        settings=lambda w: json.dumps(FT_CONFIG["tasks"][w.task], sort_keys=True),
        seed=config["seed"],
        run=stage_shell("finetune"),
    log:
        LOGS / "data" / "finetune" / "{task}.log",
    shell:
        "{params.run} {SCRIPTS}/make_sft_task.py --name {wildcards.task} --settings {params.settings:q}"
        " --seed {params.seed} --out-dir $(dirname {output.meta:q}) > {log:q} 2>&1"


def _ft_cell(w):
    return FINETUNE[(w.model, w.task, w.method)]


def finetune_model_inputs(w):
    """The pipeline's own export when the model is `pretrained: <size>/<technique>`; else nothing."""
    ref = _ft_cell(w).settings["model_source"].get("pretrained")
    if ref is None:
        return []
    size, technique = ref.split("/")
    return [rules.export_hf.output.config.format(size=size, technique=technique),
            rules.export_hf.output.weights.format(size=size, technique=technique)]


def finetune_model_path(w):
    src = _ft_cell(w).settings["model_source"]
    if "pretrained" in src:
        return str(Path(finetune_model_inputs(w)[0]).parent)
    return src.get("path") or src["hf_id"]


rule finetune:
    """Fine-tune one model × task × method cell with LlamaFactory, measured; one record per run.

    Out of memory is a result: the record says `oom` with the settings tried, and the job succeeds.
    """
    input:
        task=rules.finetune_data.output.meta,
        model=finetune_model_inputs,
        env=stage_env("finetune"),
    output:
        record=FINETUNE_DIR / "{model}" / "{task}" / "{method}" / "record.parquet",
        samples=FINETUNE_DIR / "{model}" / "{task}" / "{method}" / "samples.parquet",
    params:
        settings=lambda w: json.dumps(_ft_cell(w).settings, sort_keys=True),
        model_path=finetune_model_path,
        output_dir=lambda w: FINETUNE_DIR / w.model / w.task / w.method / "adapter",
        run=stage_shell("finetune"),
    log:
        LOGS / "finetune" / "{model}" / "{task}" / "{method}.log",
    benchmark:
        BENCH / "finetune" / "{model}" / "{task}" / "{method}.tsv"
    threads: (config.get("finetune") or {}).get("training", {}).get("threads", 1)
    resources:
        # One GPU per cell (single-process LlamaFactory); site settings live in the Slurm profile.
        **gpu_resources({"nodes": 1, "gpus_per_node": 1}),
    shell:
        "{params.run} {SCRIPTS}/finetune.py --settings {params.settings:q} --config-hash {CONFIG_HASH}"
        " --model-path {params.model_path:q} --data-dir $(dirname {input.task:q})"
        " --output-dir {params.output_dir:q} --record {output.record:q} --samples {output.samples:q} > {log:q} 2>&1"
