"""Build <out>/summary.md from stage manifests written by scripts/aggregate.py.

python scripts/summarize.py --out results --manifests results/pretrain.manifest.json ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import effbench  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effbench.aggregate.summary import write_summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output folder; summary.md is written here")
    ap.add_argument("--manifests", nargs="+", required=True, type=Path, help="<stage>.manifest.json files")
    args = ap.parse_args(argv)
    write_summary(args.manifests, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
