rule quantize:
    """Materialise one model × precision: a bf16/fp16 cast or int4 (llm-compressor, compressed-tensors)."""
    input:
        unpack(quantize_inputs),
    output:
        record=RESULTS / "quantize" / "{model}" / "{precision}" / "record.parquet",
        samples=RESULTS / "quantize" / "{model}" / "{precision}" / "samples.parquet",
        model=RESULTS / "quantize" / "{model}" / "{precision}" / "model" / "effbench.json",
    params:
        env=stage_env("quantize"),
        settings=cell_settings(QUANTIZE, "model", "precision"),
        source=quantize_source_arg,
        data=quantize_data_arg,
        out_dir=folder_of("output", "model"),
    log:
        LOGS / "quantize" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "quantize" / "{model}" / "{precision}.tsv"
    threads: stage_threads("quantize")
    priority: MEASURED_PRIORITY
    resources:
        **stage_resources("quantize"),  # GPTQ/AWQ calibrate on the GPU
    shell:
        "{STAGE_PYTHON[quantize]} {SCRIPTS:q}/quantize.py --settings {params.settings:q} --config-hash {CONFIG_HASH:q}"
        " {params.source} {params.data} --out-dir {params.out_dir:q}"
        " --record {output.record:q} --samples {output.samples:q} > {log:q} 2>&1"
