"""Write the decision outputs of a run (workflow/rules/decision.smk), all of them or none:

    python -m effbench.decision.build --results results --pretrain-records ... --constraints '{...}'

- ``decision/pareto.md`` and ``decision/pareto.csv`` (the non-dominated cells), with 2-D
  projection plots ``plots/decision/pareto_*.{png,svg}``;
- ``decision/scaling.md`` and ``decision/scaling.csv`` (every fit), plots ``plots/decision/scaling_*``;
- ``decision/recommend.md`` and ``decision/recommend.json`` for the config's constraints;
- ``decision.manifest.json``: every output (tables titled, plots titled and captioned), what was left out and why.

The files are written into a staging folder and published together (effbench.aggregate.publish):
a failure leaves the previous set exactly as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..aggregate.publish import staged
from ..atomic import atomic_path, write_text
from . import pareto, scaling
from .axes import AXES
from .frames import Frames, load_frames
from .recommend import Constraints, recommend, render_markdown, to_json

MANIFEST_VERSION = 1


def _frame_of(frames: Frames, stage: str) -> pd.DataFrame:
    return getattr(frames, stage)


def write_pareto(frames: Frames, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = ["# Pareto fronts over quality, memory, latency, throughput and energy", "",
             "A cell is non-dominated when no other cell of its group is at least as good on every objective "
             "and better on one (exact; equal cells are all non-dominated). An objective measured in no cell of a "
             "group is left out of that front; a cell missing an objective the others have is left out and listed. "
             "'Within noise': every cell dominating it wins only where their 95 % intervals overlap. "
             "Method: docs/decision.md.", ""]
    rows: list[dict[str, Any]] = []
    figures = []
    for axis in AXES.values():
        fronts = pareto.axis_fronts(_frame_of(frames, axis.stage), axis)
        lines += [f"## {axis.title}", ""]
        if not fronts:
            lines += ["No records on this axis.", ""]
        for f in fronts:
            lines += pareto.render_front(f)
            rows += pareto.front_csv_rows(f)
            fig = pareto.plot_front(f, out)
            if fig:
                figures.append(fig)
                lines += [f"![{fig['title']}](../{fig['png']})", "", fig["caption"], ""]
            else:
                lines += [f"No projection drawn: fewer than {pareto.MIN_PLOTTED} cells with every objective.", ""]
    write_text(out / "decision" / "pareto.md", "\n".join(lines))
    with atomic_path(out / "decision" / "pareto.csv") as tmp:
        pd.DataFrame(rows, columns=list(dict.fromkeys(["axis", "group", "candidate", "cell", "objectives",
                                                       *(k for r in rows for k in r)]))).to_csv(tmp, index=False)
    return figures, {"title": "Pareto fronts (non-dominated cells)", "md": "decision/pareto.md",
                     "csv": "decision/pareto.csv"}


def write_scaling(frames: Frames, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    series = [s for name in ("pretrain", "finetune", "inference")
              for s in scaling.axis_series(_frame_of(frames, AXES[name].stage), AXES[name])]
    cross = scaling.crossings(series)
    figures = scaling.plot_all(series, out)
    text = scaling.render(series, cross)
    text += "".join(f"\n![{f['title']}](../{f['png']})\n\n{f['caption']}\n" for f in figures)
    write_text(out / "decision" / "scaling.md", text)
    fits = []
    for s in series:
        r = s.result
        row = {"axis": s.axis.name, "group": s.group, "technique": s.technique, "metric": s.objective.column,
               "sizes": len(set(s.sizes)), "cells": " ".join(s.cells)}
        if isinstance(r, scaling.Fit):
            lo, hi = r.slope_interval()
            row.update(fit="log-log" if r.log_y else "semi-log", intercept=r.coef[0], slope=r.slope,
                       slope_ci_low=lo, slope_ci_high=hi, df=r.df, residual_var=r.s2)
        else:
            row.update(fit=None, reason=r.reason)
        fits.append(row)
    with atomic_path(out / "decision" / "scaling.csv") as tmp:
        pd.DataFrame(fits).to_csv(tmp, index=False)
    return figures, {"title": "Scaling fits against model size", "md": "decision/scaling.md",
                     "csv": "decision/scaling.csv", "crossings": cross}


def build(frames: Frames, constraints: Constraints, out: Path) -> dict[str, Any]:
    """Write every output into ``out`` (a staging folder) and the manifest last."""
    pareto_plots, pareto_table = write_pareto(frames, out)
    scaling_plots, scaling_table = write_scaling(frames, out)
    answer = recommend(frames, constraints)
    write_text(out / "decision" / "recommend.md", render_markdown(answer))
    write_text(out / "decision" / "recommend.json", to_json(answer))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "stage": "decision",
        "title": "From measurements to a decision",
        "tables": [pareto_table, scaling_table,
                   {"title": "Recommendation for the config's constraints", "md": "decision/recommend.md",
                    "json": "decision/recommend.json"}],
        "plots": pareto_plots + scaling_plots,
        "left_out": [{"path": x.path, "cell": x.cell, "reason": x.reason} for x in frames.left_out],
        "constraints": answer["constraints"],
    }
    write_text(out / "decision.manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, type=Path, help="the run's results folder (outputs go here)")
    for stage in ("pretrain", "finetune", "quantize", "inference"):
        ap.add_argument(f"--{stage}-records", nargs="*", default=[], type=Path)
    ap.add_argument("--scores", nargs="*", default=[], type=Path, help="eval scores.json files")
    ap.add_argument("--fidelity", nargs="*", default=[], type=Path, help="fidelity.json files of the fidelity rule")
    ap.add_argument("--baseline", default="", help="the baseline precision ('' without serving)")
    ap.add_argument("--table-load-point", default="", help="the serving load point of the paper's table")
    ap.add_argument("--constraints", default="{}", help="the config's recommend section as JSON")
    args = ap.parse_args(argv)
    with staged(args.results, "decision") as out:  # any failure from here on leaves the previous set
        frames = load_frames(args.pretrain_records, args.finetune_records, args.quantize_records,
                             args.inference_records, args.scores, args.results, args.baseline or None,
                             args.table_load_point or None, args.fidelity)
        manifest = build(frames, Constraints.from_mapping(json.loads(args.constraints)), out)
    for x in manifest["left_out"]:
        print(f"left out {x['path']}: {x['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
