QUANT = {(c.model, c.precision): c for c in SERVE.quantize}


def quantize_cell(w):
    return QUANT[(w.model, w.precision)]


def quantize_inputs(w):
    """The model's source (a pipeline export) and, for calibrated int4, the pipeline corpus."""
    s = quantize_cell(w).settings
    src = s["source"]
    out = {"env": stage_env("quantize")}
    if src["kind"] == "pretrained":
        size, technique = src["ref"].split("/")
        out["source"] = rules.export_hf.output.config.format(size=size, technique=technique)
    if s["precision"] == "int4" and s["int4"]["method"] in ("gptq", "awq"):
        out["corpus"] = rules.pretrain_data.output.train
    return out


def quantize_source_arg(w, input):
    src = quantize_cell(w).settings["source"]
    if src["kind"] == "pretrained":
        return "--source-dir " + shlex.quote(str(Path(input.source).parent))
    if src["kind"] == "path":
        return "--source-dir " + shlex.quote(src["ref"])
    return ""


rule quantize:
    """Materialise one model × precision: a bf16/fp16 cast or int4 (llm-compressor, compressed-tensors)."""
    input:
        unpack(quantize_inputs),
    output:
        record=RESULTS / "quantize" / "{model}" / "{precision}" / "record.parquet",
        samples=RESULTS / "quantize" / "{model}" / "{precision}" / "samples.parquet",
        model=RESULTS / "quantize" / "{model}" / "{precision}" / "model" / "effbench.json",
    params:
        settings=lambda w: json.dumps(quantize_cell(w).settings, sort_keys=True),
        source=quantize_source_arg,
        data=lambda w, input: f"--data-dir {shlex.quote(str(DATA_PRETRAIN))}" if "corpus" in input.keys() else "",
        run=stage_shell("quantize"),
    log:
        LOGS / "quantize" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "quantize" / "{model}" / "{precision}.tsv"
    threads: (config.get("quantize") or {}).get("threads", 1)
    resources:
        **gpu_resources({"nodes": 1, "gpus_per_node": 1}),  # GPTQ/AWQ calibrate on the GPU
    shell:
        "{params.run} {SCRIPTS}/quantize.py --settings {params.settings:q} --config-hash {CONFIG_HASH}"
        " {params.source} {params.data} --out-dir $(dirname {output.model:q})"
        " --record {output.record:q} --samples {output.samples:q} > {log:q} 2>&1"


def quantize_records():
    return [rules.quantize.output.record.format(model=c.model, precision=c.precision) for c in SERVE.quantize]
