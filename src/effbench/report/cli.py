"""Build the report page from stage manifests and document sections (the ``report`` rule).

    python -m effbench.report --out results/report.html --manifests results/pretrain.manifest.json ... \
        [--section "Title" results/decision/pareto.md results/plots/decision ...] \
        [--config-json '{...}'] [--config-hash H]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .inputs import Section, collect
from .render import write_report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="effbench report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the page to write (e.g. results/report.html)")
    ap.add_argument("--manifests", nargs="*", default=[], type=Path, help="<stage>.manifest.json files")
    ap.add_argument("--section", nargs="+", action="append", default=[], metavar=("TITLE", "FILE"),
                    help="a document section: its title, then its files (.md, .png/.svg or a folder of "
                         "plots, .csv, .json); repeatable")
    ap.add_argument("--config-json", help="the run's config (validated, defaults filled) as JSON")
    ap.add_argument("--config-hash", help="the run's config hash (records carry theirs)")
    args = ap.parse_args(argv)
    sections = [Section(s[0], [Path(f) for f in s[1:]]) for s in args.section]
    write_report(collect(args.manifests, sections, args.config_json, args.config_hash), args.out)
    print(f"wrote {args.out}")
    return 0
