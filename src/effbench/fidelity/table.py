"""The fidelity table (tables/fidelity.{csv,md}): one row per model × precision, from the
``fidelity.json`` files of workflow/rules/fidelity.smk, linked from both the quantize and the
inference stage pages. Light (pandas only): it runs in the driver."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_path, write_text

FIGURES = ("ppl", "ppl_baseline", "kl_mean", "kl_p99", "top1_agreement")
HEADERS = {"ppl": "PPL", "ppl_baseline": "Baseline PPL", "kl_mean": "KL mean (nats)", "kl_p99": "KL p99 (nats)",
           "top1_agreement": "Top-1 agreement"}
REL = {"csv": "tables/fidelity.csv", "md": "tables/fidelity.md"}
TITLE = "Fidelity to the baseline precision"
NO_RUN = "no fidelity.json (fidelity rule not run for this model and precision)"


def fidelity_path(results: Path | str, model: str, precision: str) -> Path:
    """Where workflow/rules/fidelity.smk writes a model × precision's figures."""
    return Path(results) / "fidelity" / model / precision / "fidelity.json"


def load_fidelity(files: Iterable[Path | str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The fidelity.json files an aggregation was given, keyed by their own (model, precision)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in files:
        f = json.loads(Path(path).read_text())
        found[(f["model"], f["precision"])] = f
    return found


def _fmt(v: Any, why: str | None) -> str:
    if v is None:
        return f"n/a ({why})" if why else "n/a"
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def write_fidelity_table(out: Path | str, keys: Iterable[tuple[str, str]],
                         fidelity: Mapping[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """Write the table for ``keys`` ((model, precision), in display order) under ``out`` from
    ``fidelity`` (:func:`load_fidelity`); return its paths."""
    results = Path(out)
    rows = []
    for model, precision in keys:
        f = fidelity.get((model, precision), {})
        row = {"model": model, "precision": precision, "baseline": f.get("baseline"), "engine": f.get("engine"),
               "dtype": f.get("dtype"), "positions": f.get("positions")}
        for k in FIGURES:
            row[k] = f.get(k)
            row[k + "__missing"] = f.get(k + "__missing") or (None if f else NO_RUN)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["model", "precision", "baseline", "engine", "dtype", "positions",
                                        *[c for k in FIGURES for c in (k, k + "__missing")]])
    with atomic_path(results / REL["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    lines = [f"**{TITLE}**: held-out perplexity, KL(baseline ‖ precision) of the next-token distributions "
             "(mean and p99 over positions) and top-1 agreement on the baseline's path, scored through the "
             "serving engine on the pretraining corpus' validation split (docs/fidelity.md).", ""]
    if not rows:
        write_text(results / REL["md"], "\n".join(lines + ["No models.", ""]))
        return dict(REL)
    lines.append("| Model | Precision | Engine | " + " | ".join(HEADERS[k] for k in FIGURES) + " | Positions |")
    lines.append("|---|---|---|" + "---:|" * (len(FIGURES) + 1))
    for r in rows:
        engine = f"{r['engine']} ({r['dtype']})" if r["engine"] else "n/a"
        cells = [_fmt(r[k], r[k + "__missing"]) for k in FIGURES]
        lines.append(f"| {r['model']} | {r['precision']} | {engine} | " + " | ".join(cells)
                     + f" | {r['positions'] if r['positions'] is not None else 'n/a'} |")
    write_text(results / REL["md"], "\n".join(lines) + "\n")
    return dict(REL)
