#!/usr/bin/env bash
# Create one virtual environment per stage under .venvs/ from the pinned lock files in envs/.
# Idempotent: an environment is rebuilt only when its lock file or its post-install script
# (envs/<stage>.post-install.sh) changed. Usage:
#   bash scripts/setup.sh            # every stage
#   bash scripts/setup.sh driver     # some stages
# The cluster uses the conda files in envs/*.yaml instead (see README, "On the cluster").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(driver pretrain finetune quantize inference)

"$PY" - <<'PYEOF' || { echo "Python >= 3.11 is required (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF

for stage in "${stages[@]}"; do
  lock="envs/$stage.lock.txt"
  [ -f "$lock" ] || { echo "no lock file $lock" >&2; exit 1; }
  venv=".venvs/$stage"
  stamp="$venv/.lock.sha256"
  post="envs/$stage.post-install.sh"
  # The stamp hashes what builds the venv: the lock, then the post-install script if any (a
  # stage without one keeps the plain sha256 of its lock, so its venv is not rebuilt).
  inputs=("$lock")
  if [ -f "$post" ]; then inputs+=("$post"); fi
  want=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    echo "[setup] $stage: up to date"
    continue
  fi
  echo "[setup] $stage: building $venv from $lock"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  # torch first, alone: a CPU build from the local wheel; a later resolver must not swap it.
  if grep -q '^torch==' "$lock"; then
    "$venv/bin/python" -m pip install -q "$(grep '^torch==' "$lock")"
  fi
  # The lock is a full freeze: install exactly it, nothing resolved anew.
  "$venv/bin/python" -m pip install -q --no-deps -r "$lock"
  # A stage may fix up what a pin cannot (envs/<stage>.post-install.sh, given the venv).
  if [ -f "$post" ]; then
    bash "$post" "$venv"
  fi
  # Consistency: pip check, less the findings a stage documents as accepted: one regular
  # expression per line in envs/<stage>.pip-check-allow.txt, or "# pip-check-allow: <regex>"
  # lines in the lock file.
  allow="envs/$stage.pip-check-allow.txt"
  problems=$(env -u PYTHONPATH "$venv/bin/python" -m pip check 2>&1 || true)  # the venv alone, not a checkout on PYTHONPATH
  patterns=$( { [ -f "$allow" ] && grep -v '^#' "$allow"; sed -n 's/^# pip-check-allow: //p' "$lock"; } | grep -v '^$' || true)
  if [ -n "$patterns" ]; then
    problems=$(printf '%s\n' "$problems" | grep -v -E -f <(printf '%s\n' "$patterns") || true)
  fi
  problems=$(printf '%s\n' "$problems" | grep -v -E '^No broken requirements found\.$|^$' || true)
  if [ -n "$problems" ]; then
    echo "[setup] $stage: pip check found problems:" >&2
    printf '%s\n' "$problems" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
done

# Probe each stage's environment once for `effbench preflight`, whose cache is keyed by the lock
# digests: the first preflight after set-up then takes under a second of CPU, not ~30 s
# (docs/preflight.md). A failure here is preflight's to report, not the set-up's.
for config in config/config.yaml config/paper.yaml; do
  .venvs/driver/bin/python -m effbench preflight --configfile "$config" --checks environment >/dev/null 2>&1 || true
done
