#!/usr/bin/env bash
# The driver environment runs Snakemake and the `effbench` command (preflight, recommend):
# install this checkout's package into it, editable, without resolving anything anew (its
# dependencies are in the lock). Editable: the command always runs the checkout's code.
set -euo pipefail
venv=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
"$venv/bin/python" -m pip install -q --no-deps -e "$repo"
# The build leaves its egg-info in src/: with PYTHONPATH=src (the tests) it would read as a second,
# dependency-less installation of effbench in every other environment's `pip check`.
rm -rf "$repo/src/effbench.egg-info"
