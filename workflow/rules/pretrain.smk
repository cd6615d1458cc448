def pretrain_params(wildcards):
    return json.dumps(PRETRAIN[(wildcards.size, wildcards.technique)].settings, sort_keys=True)


rule pretrain:
    """Train one size × technique cell with megatron-core, measured; one record per run."""
    input:
        data=rules.pretrain_data.output,
        env=stage_env("pretrain"),
    output:
        record=RESULTS / "pretrain" / "{size}" / "{technique}" / "record.parquet",
        samples=RESULTS / "pretrain" / "{size}" / "{technique}" / "samples.parquet",
        checkpoint=RESULTS / "pretrain" / "{size}" / "{technique}" / "checkpoint" / "model.pt",
    params:
        settings=pretrain_params,
        resume_dir=lambda w: RESULTS / "pretrain" / w.size / w.technique / "resume",
        run=stage_launch("pretrain", PRETRAIN_LAYOUT),
    log:
        LOGS / "pretrain" / "{size}" / "{technique}.log",
    benchmark:
        BENCH / "pretrain" / "{size}" / "{technique}.tsv"
    threads: config["pretrain"]["training"].get("threads", 1)
    resources:
        **gpu_resources(PRETRAIN_LAYOUT),
    shell:
        "{params.run} {SCRIPTS}/pretrain.py --settings {params.settings:q} --config-hash {CONFIG_HASH}"
        " --data-dir {DATA_PRETRAIN:q} --record {output.record:q} --samples {output.samples:q}"
        " --checkpoint {output.checkpoint:q} --resume-dir {params.resume_dir:q} > {log:q} 2>&1"


rule export_hf:
    """Export a dense cell to a Hugging Face (Llama/Qwen2-style) checkpoint for later stages."""
    input:
        checkpoint=rules.pretrain.output.checkpoint,
        tokenizer=rules.pretrain_data.output.tokenizer,
        env=stage_env("pretrain"),
    output:
        config=RESULTS / "pretrain" / "{size}" / "{technique}" / "hf" / "config.json",
        weights=RESULTS / "pretrain" / "{size}" / "{technique}" / "hf" / "model.safetensors",
    params:
        run=stage_shell("pretrain"),
    log:
        LOGS / "export_hf" / "{size}" / "{technique}.log",
    shell:
        "{params.run} {SCRIPTS}/export_hf.py --checkpoint {input.checkpoint:q}"
        " --tokenizer-dir {DATA_PRETRAIN}/tokenizer --out-dir $(dirname {output.config:q}) > {log:q} 2>&1"


def export_targets():
    return [rules.export_hf.output.config.format(size=c.size, technique=c.technique) for c in EXPORT_CELLS]
