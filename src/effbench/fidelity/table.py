"""The fidelity table (tables/fidelity.{csv,md}): one row per model × precision, from the
``fidelity.json`` files of workflow/rules/fidelity.smk, linked from both the quantize and the
inference stage pages, each with its verdict against the thresholds
(:func:`effbench.fidelity.measures.verdict`: pass | fail | baseline, or n/a with the reason).
:func:`attach_verdict` joins the verdict onto serving rows as ``fid_verdict`` (the decision
frames; ``recommend`` leaves a failing precision out by default). Light (pandas only): it runs in
the driver."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_path, write_text
from .measures import THRESHOLDS, verdict

FIGURES = ("ppl", "ppl_baseline", "kl_mean", "kl_p99", "top1_agreement")
HEADERS = {"ppl": "PPL", "ppl_baseline": "Baseline PPL", "kl_mean": "KL mean (nats)", "kl_p99": "KL p99 (nats)",
           "top1_agreement": "Top-1 agreement"}
REL = {"csv": "tables/fidelity.csv", "md": "tables/fidelity.md"}
TITLE = "Fidelity to the baseline precision"
NO_RUN = "no fidelity.json (fidelity rule not run for this model and precision)"
#: The report's mark of a precision that failed its fidelity check (beside [S], [F], [E]).
FIDELITY_MARK = "X"
#: The verdict columns joined onto serving rows (:func:`attach_verdict`).
VERDICT = "fid_verdict"
VERDICT_COLUMNS = (VERDICT, VERDICT + "__missing", VERDICT + "__source", VERDICT + "__reason")


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


def verdict_of(f: Mapping[str, Any]) -> dict[str, Any]:
    """A loaded fidelity.json's verdict (``verdict``, ``verdict__missing``, ``verdict_reason``,
    ``thresholds``): as the file states it, or, for a file written before verdicts were, judged
    now against :data:`~effbench.fidelity.measures.THRESHOLDS`; with no file, none and why."""
    if not f:
        return {"verdict": None, "verdict__missing": NO_RUN, "verdict_reason": None, "thresholds": None}
    if "verdict" in f:
        return {k: f.get(k) for k in ("verdict", "verdict__missing", "verdict_reason", "thresholds")}
    return verdict(f, THRESHOLDS, baseline=f.get("precision") == f.get("baseline"))


def thresholds_text(th: Mapping[str, float] | None) -> str:
    """``kl_mean_max=0.05, top1_agreement_min=0.9``."""
    return ", ".join(f"{k}={v:g}" for k, v in (th or {}).items())


def attach_verdict(df: pd.DataFrame, fidelity: Mapping[tuple[str, str], dict[str, Any]]) -> pd.DataFrame:
    """Each serving row's fidelity verdict (``fidelity``: :func:`load_fidelity`): ``fid_verdict``
    (pass | fail | baseline, or None), ``fid_verdict__missing`` (why none), ``fid_verdict__reason``
    (the figures against the thresholds) and ``fid_verdict__source`` (the file and thresholds)."""
    df = df.copy()
    cols: dict[str, list[Any]] = {c: [] for c in VERDICT_COLUMNS}
    for _, r in df.iterrows():
        f = fidelity.get((r["model"], r["precision"]), {})
        v = verdict_of(f)
        cols[VERDICT].append(v["verdict"])
        cols[VERDICT + "__missing"].append(None if v["verdict"] else v["verdict__missing"])
        cols[VERDICT + "__reason"].append(v["verdict_reason"])
        cols[VERDICT + "__source"].append(f"fidelity.json: {thresholds_text(v['thresholds'])}" if v["verdict"]
                                          else "unavailable")
    for k, vals in cols.items():
        df[k] = pd.Series(vals, index=df.index, dtype=object)
    return df


def verdict_cell(v: Mapping[str, Any]) -> str:
    """The verdict as the tables print it: ``pass``, ``baseline``, ``fail (why)`` or ``n/a (why)``."""
    if v["verdict"] is None:
        return f"n/a ({v['verdict__missing']})"
    return f"fail ({v['verdict_reason']})" if v["verdict"] == "fail" else str(v["verdict"])


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
        v = verdict_of(f)
        row.update(verdict=v["verdict"], verdict__missing=None if v["verdict"] else v["verdict__missing"],
                   verdict_reason=v["verdict_reason"],
                   **{f"threshold_{k}": (v["thresholds"] or {}).get(k) for k in THRESHOLDS})
        row["_cell"], row["_thresholds"] = verdict_cell(v), thresholds_text(v["thresholds"])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["model", "precision", "baseline", "engine", "dtype", "positions",
                                        *[c for k in FIGURES for c in (k, k + "__missing")],
                                        "verdict", "verdict__missing", "verdict_reason",
                                        *[f"threshold_{k}" for k in THRESHOLDS]])
    with atomic_path(results / REL["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    lines = [f"**{TITLE}**: held-out perplexity, KL(baseline ‖ precision) of the next-token distributions "
             "(mean and p99 over positions) and top-1 agreement on the baseline's path, scored through the "
             "serving engine on the pretraining corpus' validation split (docs/fidelity.md).", ""]
    if not rows:
        write_text(results / REL["md"], "\n".join(lines + ["No models.", ""]))
        return dict(REL)
    used = sorted({r["_thresholds"] for r in rows if r["_thresholds"]})
    lines += ["**Verdict**: pass when every threshold holds (KL mean at most `kl_mean_max` nats, top-1 agreement "
              "at least `top1_agreement_min`), fail when one is missed, baseline for the baseline precision itself; "
              "thresholds used: " + ("; ".join(used) if used else thresholds_text(THRESHOLDS))
              + " (effbench.fidelity.measures.THRESHOLDS). `effbench recommend` leaves a failing precision out "
              "unless `--allow-fidelity-fail` (docs/decision.md).", ""]
    lines.append("| Model | Precision | Engine | " + " | ".join(HEADERS[k] for k in FIGURES)
                 + " | Positions | Fidelity |")
    lines.append("|---|---|---|" + "---:|" * (len(FIGURES) + 1) + "---|")
    for r in rows:
        engine = f"{r['engine']} ({r['dtype']})" if r["engine"] else "n/a"
        cells = [_fmt(r[k], r[k + "__missing"]) for k in FIGURES]
        lines.append(f"| {r['model']} | {r['precision']} | {engine} | " + " | ".join(cells)
                     + f" | {r['positions'] if r['positions'] is not None else 'n/a'} | {r['_cell']} |")
    write_text(results / REL["md"], "\n".join(lines) + "\n")
    return dict(REL)
