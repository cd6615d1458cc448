"""`effbench recommend`: answer a user's constraints from a finished run's records.

    effbench recommend [--configfile F ...] [--results DIR] [--memory-gb 2] [--latency-ms-per-token 50] ...
                       [--allow-fidelity-fail] [--min-goodput RPS] [--min-goodput-frac F]
                       [--slo-ttft-ms MS] [--slo-tpot-ms MS]

The constraints come from the config's `recommend:` section (defaults in the schema), each
overridden by its flag. A precision that failed its fidelity check (docs/fidelity.md) is left out
and the answer says so; --allow-fidelity-fail keeps it. The records are the ones the run's stage
manifests list (`<results>/<stage>.manifest.json`), read as the aggregation reads them. Prints Markdown (or
JSON with --json); --out-md / --out-json also write files. Exit 0 with an answer (also when
nothing meets the constraints: that is an answer), 1 when there are no aggregated results or the
config is bad, 2 on a usage error, which includes a load point, technique, model or precision the
records do not hold (the valid ones are listed) and a goodput argument out of its range (named) or
an SLO given without a goodput floor. A goodput floor is proven only by a load point measured under
SLOs no looser than --slo-ttft-ms / --slo-tpot-ms (effbench.decision.goodput). A --model-params more
than 10× outside the sizes a step measured is warned about on stderr as well as in the answer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..config.errors import ConfigError
from ..provenance import REPO_ROOT
from .constraints import PRECISION_OBJECTIVES, Constraints
from .frames import distinct
from .goodput import usage_errors
from .recommend import recommend
from .recommend_render import render_markdown, to_json

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
# flag -> (constraint, type, help)
FLAGS: dict[str, tuple[str, Any, str]] = {
    "--memory-gb": ("memory_gb", float, "device memory, GB (checked against each step's peak memory)"),
    "--latency-ms-per-token": ("latency_ms_per_token", float, "time per output token when serving, ms"),
    "--latency-s-per-request": ("latency_s_per_request", float, "end-to-end time per request when serving, s"),
    "--min-throughput": ("min_throughput_tokens_per_s", float, "minimum generated tokens/s when serving"),
    "--energy-j-per-token": ("energy_j_per_token", float, "energy per generated token, J"),
    "--max-accuracy-drop": ("max_accuracy_drop", float, "tolerated accuracy drop vs the baseline precision, "
                                                        "a fraction of its accuracy (0.05 = 5 %%)"),
    "--model-params": ("model_params", float, "size of the model you will use, parameters (e.g. 1.5e9)"),
    "--load-point": ("load_point", str, "serving load point to judge by (default: inference.table_load_point)"),
    "--technique": ("technique", str, "judge only this pretraining technique at the architecture step"),
    "--model": ("model", str, "judge only this model at the fine-tuning and precision steps"),
    "--precision": ("precision", str, "judge only this precision at the precision step"),
    "--min-goodput": ("min_goodput_rps", float, "minimum goodput, requests/s that met both SLOs (TTFT and TPOT), "
                                                "at any load point measured under SLOs no looser than asked"),
    "--min-goodput-frac": ("min_goodput_frac", float, "minimum share of requests that met both SLOs (0-1)"),
    "--slo-ttft-ms": ("slo_ttft_ms", float, "the TTFT SLO a goodput floor is judged under, ms (a record measured "
                                            "under a looser one cannot prove the floor)"),
    "--slo-tpot-ms": ("slo_tpot_ms", float, "the TPOT SLO a goodput floor is judged under, ms"),
}
# constraint -> (what it names, where the measured choices are: frame, column)
CHOICES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "load_point": ("load point", [("inference", "load_point")]),
    "technique": ("technique", [("pretrain", "technique")]),
    "model": ("model", [("finetune", "model"), ("inference", "model")]),
    "precision": ("precision", [("inference", "precision")]),
}


def unknown_choices(frames: Any, c: Constraints) -> list[str]:
    """What the constraints name (a load point, technique, model, precision) that the records do
    not hold, each with the valid choices. A name whose records are all absent (no serving records
    at all, say) is not judged: the steps then say "not measured"."""
    out = []
    for name, (what, where) in CHOICES.items():
        asked = getattr(c, name)
        if name == "load_point" and asked is None:
            asked = frames.table_load_point  # the config's inference.table_load_point stands in
        if asked is None:
            continue
        held = [(getattr(frames, f), col) for f, col in where if len(getattr(frames, f)) and col in getattr(frames, f)]
        if not held:
            continue
        valid = sorted(distinct(v for df, col in held for v in df[col]))
        if str(asked) not in valid:
            flag = "--" + name.replace("_", "-")
            source = (flag if getattr(c, name) is not None else "inference.table_load_point in the config")
            out.append(f"unknown {what} {asked!r} ({source}): the records under {frames.results} hold "
                       f"{', '.join(valid) or 'none'}")
    return out


def load_config(paths: Sequence[str]) -> dict[str, Any]:
    """The validated config (schema defaults filled), the files merged in order as Snakemake does."""
    from ..config import deep_merge, validate
    from ..config.yaml_strict import Locations, load_file

    merged: dict[str, Any] = {}
    where = Locations()
    for p in paths:
        data, lines = load_file(p)
        where.update(lines)
        merged = deep_merge(merged, data or {})
    try:
        return validate(merged)
    except ConfigError as e:
        raise ConfigError(where.annotate(str(e))) from None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="effbench recommend", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", nargs="+", default=None, help=f"config file(s) (default: {DEFAULT_CONFIG})")
    ap.add_argument("--results", type=Path, help="results folder of the run (default: the config's `results`)")
    for flag, (name, typ, text) in FLAGS.items():
        ap.add_argument(flag, dest=name, type=typ, help=text)
    ap.add_argument("--precision-objective", choices=sorted(PRECISION_OBJECTIVES),
                    help="what the precision step optimises among the precisions that qualify")
    ap.add_argument("--allow-fidelity-fail", action="store_true", default=None,
                    help="keep precisions that failed their fidelity check as candidates (left out by default; "
                         "recommend.allow_fidelity_fail)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    ap.add_argument("--out-md", type=Path, help="also write the Markdown answer here")
    ap.add_argument("--out-json", type=Path, help="also write the JSON answer here")
    return ap


def constraints_from(config: dict[str, Any], args: argparse.Namespace) -> Constraints:
    values = dict(config.get("recommend") or {})
    for name, _, _ in FLAGS.values():
        v = getattr(args, name)
        if v is not None:
            values[name] = v
    if args.precision_objective:
        values["precision_objective"] = args.precision_objective
    if args.allow_fidelity_fail:
        values["allow_fidelity_fail"] = True
    return Constraints.from_mapping(values)


def main(argv: Sequence[str] | None = None) -> int:
    from .frames import frames_from_results, has_manifests

    try:
        args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    bad_goodput = usage_errors({name: getattr(args, name) for name, _, _ in FLAGS.values()})
    if bad_goodput:  # a usage error, like an unknown name: the valid ranges are named
        print("effbench recommend: " + "\neffbench recommend: ".join(bad_goodput), file=sys.stderr)
        return 2
    try:
        config = load_config(args.configfile or [str(DEFAULT_CONFIG)])
        constraints = constraints_from(config, args)
    except (ConfigError, ValueError) as e:
        print(f"effbench recommend: {e}", file=sys.stderr)
        return 1
    results = args.results or Path(config["results"])
    if not has_manifests(results):
        print(f"effbench recommend: no aggregated results under {results} (no <stage>.manifest.json): "
              "run the pipeline first, or pass --results", file=sys.stderr)
        return 1
    frames = frames_from_results(results, (config.get("quantize") or {}).get("baseline"),
                                 (config.get("inference") or {}).get("table_load_point"))
    bad = unknown_choices(frames, constraints)
    if bad:
        print("effbench recommend: " + "\neffbench recommend: ".join(bad), file=sys.stderr)
        return 2
    answer = recommend(frames, constraints)
    for w in dict.fromkeys(w for s in answer["steps"] for w in s.get("warnings", []) if w.startswith("model_params")):
        print(f"effbench recommend: warning: {w}", file=sys.stderr)
    md, js = render_markdown(answer), to_json(answer)
    if args.out_md:
        write_text(args.out_md, md)
    if args.out_json:
        write_text(args.out_json, js)
    print(js if args.json else md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
