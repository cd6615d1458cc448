# Fidelity of each precision to the baseline precision, independent of task accuracy
# (docs/fidelity.md): held-out perplexity, KL of next-token distributions, top-1 agreement,
# scored through the engine the inference stage serves with. One job per model × precision.
FIDELITY_BASELINE = (config.get("quantize") or {}).get("baseline", "")
FIDELITY_WINDOWS = 32  # held-out windows per checkpoint, each the model's context (vLLM: max_model_len - 1)
_ENGINE_KEYS = ("engine", "dtype", "seed", "vllm", "threads", "device")


def fidelity_serving(model, precision):
    """The engine settings the inference stage serves this model × precision with."""
    s = next(iter(SERVE.serving_job(model, precision).values()))
    return {k: s[k] for k in _ENGINE_KEYS}


def fidelity_job(w):
    return json.dumps({"model": w.model, "precision": w.precision, "baseline_precision": FIDELITY_BASELINE,
                       "windows": FIDELITY_WINDOWS, "window_len": None,
                       "compare": fidelity_serving(w.model, w.precision),
                       "baseline": fidelity_serving(w.model, FIDELITY_BASELINE)}, sort_keys=True)


rule fidelity:
    """Score one model × precision and its baseline on held-out text through the serving engine."""
    input:
        model=rules.quantize.output.model,
        baseline=lambda w: rules.quantize.output.model.format(model=w.model, precision=FIDELITY_BASELINE),
        held_out=rules.pretrain_data.output.val,
        meta=rules.pretrain_data.output.meta,
        env=stage_env("inference"),
    output:
        RESULTS / "fidelity" / "{model}" / "{precision}" / "fidelity.json",
    params:
        settings=fidelity_job,
        run=stage_shell("inference"),
    log:
        LOGS / "fidelity" / "{model}" / "{precision}.log",
    benchmark:
        BENCH / "fidelity" / "{model}" / "{precision}.tsv"
    threads: (config.get("inference") or {}).get("threads", 1)
    resources:
        **gpu_resources({"nodes": 1, "gpus_per_node": 1}),
    shell:
        "{params.run} {SCRIPTS}/fidelity.py --settings {params.settings:q} --model-dir $(dirname {input.model:q})"
        " --baseline-dir $(dirname {input.baseline:q}) --data-dir $(dirname {input.meta:q}) --out {output:q}"
        " > {log:q} 2>&1"


def fidelity_files():
    """Every model × precision that is served (the engine settings come from the inference cells)."""
    served = {(c.model, c.precision) for c in SERVE.inference}
    return [rules.fidelity.output[0].format(model=m, precision=p) for m, p in sorted(served)]
