"""Aggregate one stage's records into tables, a leaderboard, Pareto plots and a manifest.

    python scripts/aggregate.py --stage pretrain --out results --records a.parquet b.parquet ...

Writes <out>/tables/<stage>.{csv,md,tex}, <out>/leaderboard/<stage>.{csv,md},
<out>/plots/<stage>_<y>_vs_<x>.{png,svg} and <out>/<stage>.manifest.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import effbench  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effbench.aggregate.specs import SPECS
from effbench.aggregate.stage import aggregate_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, choices=sorted(SPECS))
    ap.add_argument("--out", required=True, type=Path, help="output folder (e.g. results)")
    ap.add_argument("--records", nargs="*", default=[], type=Path, help="record.parquet files of this stage")
    args = ap.parse_args(argv)
    manifest = aggregate_stage(args.stage, args.records, args.out)
    for s in manifest["skipped"]:
        print(f"skipped {s['name']}: {s['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
