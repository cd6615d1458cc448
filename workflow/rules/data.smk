rule pretrain_data:
    """Make (synthetic) or tokenize (shards) the pretraining corpus and its tokenizer."""
    output:
        meta=DATA_PRETRAIN / "meta.json",
        train=DATA_PRETRAIN / "train.bin",
        val=DATA_PRETRAIN / "val.bin",
        tokenizer=DATA_PRETRAIN / "tokenizer" / "tokenizer.json",
    params:
        env=stage_env("pretrain"),
        settings=data_settings(),
        seed=SEED,
        world=WORLD_VERSION,  # a new world generator remakes the data
    log:
        LOGS / "data" / "pretrain.log",
    benchmark:
        BENCH / "data" / "pretrain.tsv"
    resources:
        **light_resources(),
    shell:
        "{STAGE_PYTHON[pretrain]} {SCRIPTS:q}/make_data.py --settings {params.settings:q} --seed {params.seed:q}"
        " --out-dir {DATA_PRETRAIN:q} > {log:q} 2>&1"
