"""The fidelity table joins each model × precision's fidelity.json into the quantize and
inference stage pages; a model × precision without one shows n/a with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from test_serving import _fixture

from effbench.aggregate.serving import aggregate_inference, aggregate_quantize
from effbench.aggregate.summary import write_summary
from effbench.fidelity.table import NO_RUN, fidelity_path


ROOT = Path(__file__).resolve().parents[2]


def _fidelity_files(where: Path) -> list[Path]:
    int4 = {"model": "tiny", "precision": "int4", "baseline": "bf16", "engine": "vllm", "dtype": "bf16",
            "positions": 4064, "ppl": 6.601, "ppl_baseline": 6.592, "kl_mean": 5e-4, "kl_p99": 0.004,
            "top1_agreement": 0.98}
    bf16 = {**int4, "precision": "bf16", "ppl": 6.592, "kl_mean": None, "kl_p99": None, "top1_agreement": None,
            **{f"{k}__missing": "the baseline itself" for k in ("kl_mean", "kl_p99", "top1_agreement")}}
    files = []
    for f in (int4, bf16):
        p = fidelity_path(where, "tiny", f["precision"])
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(f))
        files.append(p)
    return files


def test_fidelity_table_in_both_stage_pages(tmp_path):
    quant, inf, scores = _fixture(tmp_path)
    out = tmp_path / "out"
    fidelity = _fidelity_files(tmp_path / "results")
    m = aggregate_inference(inf, quant, scores, out, "bf16", "offline", fidelity)
    q = aggregate_quantize(quant, scores, out, "bf16", fidelity)
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


def test_the_aggregation_script_joins_the_fidelity_files_it_is_given(tmp_path):
    """As the rule runs it: outputs are staged in a temporary folder and published together. The
    fidelity figures were looked up under the staging folder and always read 'not run'."""
    quant, inf, scores = _fixture(tmp_path)
    out = tmp_path / "results"
    fidelity = _fidelity_files(out)
    for stage, extra in (("quantize", []), ("inference", ["--quantize-records", *map(str, quant),
                                                          "--table-load-point", "offline"])):
        records = quant if stage == "quantize" else inf
        subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), "--stage", stage, "--out", str(out),
                        "--records", *map(str, records), "--scores", *map(str, scores), "--fidelity",
                        *map(str, fidelity), "--baseline", "bf16", *extra], check=True, capture_output=True)
        table = pd.read_csv(out / "tables" / f"{stage}.csv").set_index("precision")
        assert table.loc["int4", "fid_top1_agreement"] == 0.98 and table.loc["int4", "fid_ppl"] == 6.601
    assert pd.read_csv(out / "tables" / "fidelity.csv").set_index("precision").loc["int4", "kl_mean"] == 5e-4
