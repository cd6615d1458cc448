rule pretrain:
    """Train one size × technique cell with megatron-core, measured; one record per run."""
    input:
        data=rules.pretrain_data.output,
    output:
        record=RESULTS / "pretrain" / "{size}" / "{technique}" / "record.parquet",
        samples=RESULTS / "pretrain" / "{size}" / "{technique}" / "samples.parquet",
        checkpoint=RESULTS / "pretrain" / "{size}" / "{technique}" / "checkpoint" / "model.pt",
    params:
        env=stage_env("pretrain"),
        settings=cell_settings(PRETRAIN, "size", "technique"),
        resume_dir=lambda w: RESULTS / "pretrain" / w.size / w.technique / "resume",
        run=stage_launch("pretrain"),
    log:
        LOGS / "pretrain" / "{size}" / "{technique}.log",
    benchmark:
        BENCH / "pretrain" / "{size}" / "{technique}.tsv"
    threads: stage_threads("pretrain")
    priority: MEASURED_PRIORITY
    resources:
        **stage_resources("pretrain"),
    shell:
        "{params.run} {SCRIPTS:q}/pretrain.py --settings {params.settings:q} --config-hash {CONFIG_HASH:q}"
        " --data-dir {DATA_PRETRAIN:q} --record {output.record:q} --samples {output.samples:q}"
        " --checkpoint {output.checkpoint:q} --resume-dir {params.resume_dir:q} > {log:q} 2>&1"


rule export_hf:
    """Export a dense cell to a Hugging Face (Llama/Qwen2-style) checkpoint for later stages."""
    input:
        checkpoint=rules.pretrain.output.checkpoint,
        tokenizer=rules.pretrain_data.output.tokenizer,
    output:
        config=RESULTS / "pretrain" / "{size}" / "{technique}" / "hf" / "config.json",
        weights=RESULTS / "pretrain" / "{size}" / "{technique}" / "hf" / "model.safetensors",
    params:
        env=stage_env("pretrain"),
        tokenizer_dir=folder_of("input", "tokenizer"),
        out_dir=folder_of("output", "config"),
    log:
        LOGS / "export_hf" / "{size}" / "{technique}.log",
    resources:
        **light_resources(),
    shell:
        "{STAGE_PYTHON[pretrain]} {SCRIPTS:q}/export_hf.py --checkpoint {input.checkpoint:q}"
        " --tokenizer-dir {params.tokenizer_dir:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
