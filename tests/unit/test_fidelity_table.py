"""The fidelity table joins each model × precision's fidelity.json into the quantize and
inference stage pages; a model × precision without one shows n/a with the reason."""

from __future__ import annotations

import json

import pandas as pd
from test_serving import _fixture

from effbench.aggregate.serving import aggregate_inference, aggregate_quantize
from effbench.aggregate.summary import write_summary
from effbench.fidelity.table import NO_RUN, fidelity_path


def test_fidelity_table_in_both_stage_pages(tmp_path):
    quant, inf, scores = _fixture(tmp_path)
    out = tmp_path / "out"
    int4 = {"model": "tiny", "precision": "int4", "baseline": "bf16", "engine": "vllm", "dtype": "bf16",
            "positions": 4064, "ppl": 6.601, "ppl_baseline": 6.592, "kl_mean": 5e-4, "kl_p99": 0.004,
            "top1_agreement": 0.98}
    bf16 = {**int4, "precision": "bf16", "ppl": 6.592, "kl_mean": None, "kl_p99": None, "top1_agreement": None,
            **{f"{k}__missing": "the baseline itself" for k in ("kl_mean", "kl_p99", "top1_agreement")}}
    for f in (int4, bf16):
        p = fidelity_path(out, "tiny", f["precision"])
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(f))
    m = aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    q = aggregate_quantize(quant, scores, out, "bf16")
    for manifest in (m, q):
        assert any(x["md"] == "tables/fidelity.md" for x in manifest["extra_tables"])
    table = pd.read_csv(out / "tables" / "fidelity.csv")
    assert list(table["precision"]) == ["bf16", "fp16", "int4"]
    row = table.set_index("precision")
    assert row.loc["int4", "top1_agreement"] == 0.98 and row.loc["int4", "kl_mean"] == 5e-4
    assert row.loc["fp16", "kl_mean__missing"] == NO_RUN and pd.isna(row.loc["fp16", "ppl"])
    md = (out / "tables" / "fidelity.md").read_text()
    assert "| tiny | int4 | vllm (bf16) | 6.6010 | 6.5920 | 5.00e-04 | 0.0040 | 0.9800 | 4064 |" in md
    assert "n/a (the baseline itself)" in md
    summary = write_summary([out / "inference.manifest.json", out / "quantize.manifest.json"], out).read_text()
    assert summary.count("Fidelity to the baseline precision") >= 2
