#!/usr/bin/env bash
# Set up every stage environment (idempotent) and run the whole test suite, each test
# folder in the environment whose libraries it exercises:
#   tests/unit, tests/workflow -> .venvs/driver   (config, measurement core, records, DAG, aggregation)
#   tests/pretrain             -> .venvs/pretrain (megatron-core, data, Hugging Face export)
#   tests/finetune             -> .venvs/finetune (LlamaFactory methods, the real OOM path)
#   tests/quantize             -> .venvs/quantize (llm-compressor int4, compressed-tensors)
#   tests/inference            -> .venvs/inference (vLLM CPU build, transformers fallback, lm-eval)
#   tests/fidelity             -> .venvs/inference (fidelity to the baseline; int4 made in .venvs/quantize)
# Usage: bash scripts/test.sh [--fast] [pytest args...]
#   --fast: the fast tier only: tests/unit and tests/workflow less the tests marked `slow` (those
#           that run stage jobs: the minimal pipeline, relocation, Slurm, the browser) — every
#           config check, formula, record, aggregation and dry-run test, in about 2 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi
bash scripts/setup.sh || exit 1
export PYTHONPATH="$PWD/src"
if [ $fast = 1 ]; then
  exec .venvs/driver/bin/python -m pytest tests/unit tests/workflow -q -m "not slow" "$@"
fi
# The real Slurm test needs Debian's slurm and munge packages: install them when we can (root).
if ! [ -x /usr/sbin/slurmctld ] && ! command -v slurmctld >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    timeout -k 10 600 bash scripts/slurm-local.sh install || exit 1
  else
    echo "test.sh: not root, Slurm packages absent: the Slurm test will be skipped" >&2
  fi
fi
# The report's browser test drives Debian's chromium through Playwright (no browser download).
if ! [ -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    timeout -k 10 600 env DEBIAN_FRONTEND=noninteractive bash -c 'apt-get update -q && apt-get install -y -q chromium' || exit 1
  else
    echo "test.sh: not root, /usr/bin/chromium absent: the report's browser test will be skipped" >&2
  fi
fi
status=0
.venvs/pretrain/bin/python -m pytest tests/pretrain -q "$@" || status=1
.venvs/finetune/bin/python -m pytest tests/finetune -q -p no:cacheprovider "$@" || status=1
.venvs/quantize/bin/python -m pytest tests/quantize -q "$@" || status=1
.venvs/inference/bin/python -m pytest tests/inference -q "$@" || status=1
.venvs/inference/bin/python -m pytest tests/fidelity -q "$@" || status=1
.venvs/driver/bin/python -m pytest tests/unit tests/workflow -q "$@" || status=1
exit $status
