"""``effbench preflight``: check a config's campaign before any job is submitted.

Prints one table, cell by cell; exits 1 listing every problem with the config key or path to
fix, 2 when the config itself is invalid, 0 when nothing is wrong. docs/preflight.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config.errors import ConfigError
from ..config.merge import deep_merge
from ..config.yaml_strict import load_file
from ..provenance import REPO_ROOT
from .environments import CACHE_ENV, cached_probe, run_probe
from .profile import load_profile
from .rows import problems_text, table
from .run import CHECKS, Options, preflight
from .runtime import ASSUMED_GPU, ASSUMED_MFU


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="effbench preflight", description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", action="append", type=Path,
                   help="config file (repeat to merge, later over earlier, as Snakemake does); "
                        "default config/config.yaml")
    p.add_argument("--profile", type=Path, default=REPO_ROOT / "profiles" / "slurm",
                   help="Snakemake profile folder whose config.yaml gives run times (default profiles/slurm)")
    p.add_argument("--results", type=Path, help="results folder for disk and measured rates (default: `results:`)")
    p.add_argument("--mfu", type=float, default=ASSUMED_MFU,
                   help=f"MFU assumed where no measured record exists (default {ASSUMED_MFU})")
    p.add_argument("--gpu", default=ASSUMED_GPU,
                   help=f"GPU whose datasheet peak the run-time estimate uses (default {ASSUMED_GPU}); "
                        "measure.peak_flops in the config wins")
    p.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--no-cache", action="store_true",
                   help="probe every environment afresh (imports, versions, lm-eval tasks) instead of reusing "
                        f"what was kept for an unchanged lock file (${CACHE_ENV}, default ~/.cache/effbench/preflight)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    checks = tuple(c.strip() for c in a.checks.split(",") if c.strip())
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        print(f"effbench preflight: unknown check(s) {unknown}; choose from {list(CHECKS)}", file=sys.stderr)
        return 2
    files = a.configfile or [REPO_ROOT / "config" / "config.yaml"]
    try:
        config: dict = {}
        for f in files:
            config = deep_merge(config, load_file(f)[0] or {})
        opts = Options(load_profile(a.profile), a.results, a.mfu, a.gpu, checks,
                       probe=run_probe if a.no_cache else cached_probe)
        rows = preflight(config, opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    except ConfigError as e:
        print(f"effbench preflight: the config is invalid:\n{e}", file=sys.stderr)
        return 2
    print(table(rows))
    bad = [r for r in rows if r.problem]
    if bad:
        print(f"\n{len(bad)} problem(s):\n{problems_text(rows)}")
        return 1
    print(f"\nNo problems in {len(rows)} checks ({', '.join(checks)}).")
    return 0
