"""`effbench`: the package's command line (installed into the driver environment by the README's
set-up, `envs/driver.post-install.sh`). Each subcommand lives in the package of its idea and is
imported only when called, so `effbench --help` stays fast and needs none of the stage libraries.

    effbench preflight [--configfile F] ...   check a campaign before any job is submitted
    effbench recommend [--configfile F] ...   answer a user's constraints from the measured records
    effbench report --out F --manifests ...   the run's HTML report (what the `report` rule runs)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with `main(argv) -> int`, one line of help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "preflight": ("effbench.preflight.cli", "check a config's campaign before any job is submitted"),
    "recommend": ("effbench.decision.recommend_cli", "choose techniques under constraints from the measured records"),
    "report": ("effbench.report.cli", "build the self-contained HTML report of a run (the `report` rule runs it)"),
}


def _usage() -> str:
    lines = ["usage: effbench <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "`effbench <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"effbench: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
