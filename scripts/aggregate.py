"""Aggregate one stage's records into tables, a leaderboard, Pareto plots and a manifest.

    python scripts/aggregate.py --stage pretrain --out results --records a.parquet b.parquet ...

Writes <out>/tables/<stage>.{csv,md,tex}, <out>/leaderboard/<stage>.{csv,md},
<out>/plots/<stage>_<y>_vs_<x>.{png,svg} and <out>/<stage>.manifest.json: all of them or, when
anything fails, none (the previous ones stay). A bad record (unreadable, off-schema, at another
cell's path) fails the aggregation, naming the file; with --skip-bad-records it is left out and
listed under the table, in the manifest and on stderr.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

try:
    import effbench  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effbench.aggregate.frame import skipping_bad_records
from effbench.aggregate.publish import staged
from effbench.aggregate.serving import aggregate_inference, aggregate_quantize
from effbench.aggregate.specs import SPECS
from effbench.aggregate.stage import aggregate_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, choices=sorted(SPECS))
    ap.add_argument("--out", required=True, type=Path, help="output folder (e.g. results)")
    ap.add_argument("--records", nargs="*", default=[], type=Path, help="record.parquet files of this stage")
    ap.add_argument("--quantize-records", nargs="*", default=[], type=Path, help="(inference) quantize records")
    ap.add_argument("--scores", nargs="*", default=[], type=Path, help="(quantize, inference) eval scores.json files")
    ap.add_argument("--fidelity", nargs="*", default=[], type=Path,
                    help="(quantize, inference) fidelity.json files of the fidelity rule")
    ap.add_argument("--baseline", help="(quantize, inference) the precision MCR compares against")
    ap.add_argument("--table-load-point", help="(inference) the load point of the paper's table")
    ap.add_argument("--skip-bad-records", action="store_true",
                    help="leave out (and list) bad records instead of failing (config aggregate.skip_bad_records)")
    args = ap.parse_args(argv)
    with ExitStack() as stack:
        if args.skip_bad_records:
            stack.enter_context(skipping_bad_records())
        # Staged as a whole: the quantize and inference aggregations write more after the stage's own set.
        with staged(args.out, args.stage) as out:
            if args.stage == "quantize":
                manifest = aggregate_quantize(args.records, args.scores, out, args.baseline, args.fidelity)
            elif args.stage == "inference":
                manifest = aggregate_inference(args.records, args.quantize_records, args.scores, out, args.baseline,
                                               args.table_load_point, args.fidelity)
            else:
                manifest = aggregate_stage(args.stage, args.records, out)
    for s in manifest["skipped"]:
        print(f"skipped {s['name']}: {s['reason']}", file=sys.stderr)
    for x in manifest.get("left_out", []):
        print(f"left out {x['path']}: {x['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
