#!/usr/bin/env bash
# Create one virtual environment per stage under .venvs/ from the pinned lock files in envs/.
# Idempotent: an environment is rebuilt only when its lock file changed. Usage:
#   bash scripts/setup.sh            # every stage
#   bash scripts/setup.sh driver     # some stages
# The cluster uses the conda files in envs/*.yaml instead (see README, "On the cluster").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(driver pretrain quantize inference)

"$PY" - <<'PYEOF' || { echo "Python >= 3.11 is required (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF

for stage in "${stages[@]}"; do
  lock="envs/$stage.lock.txt"
  [ -f "$lock" ] || { echo "no lock file $lock" >&2; exit 1; }
  venv=".venvs/$stage"
  stamp="$venv/.lock.sha256"
  want=$(sha256sum "$lock" | cut -d' ' -f1)
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
  # pip check, less the findings a lock file declares harmless ("# pip-check-allow: <regex>").
  allow=$(sed -n 's/^# pip-check-allow: //p' "$lock" | paste -sd'|' -)
  if ! check=$("$venv/bin/python" -m pip check 2>&1); then
    rest=$(printf '%s\n' "$check" | grep -v -E "${allow:-^\$}" || true)
    if [ -n "$rest" ]; then printf '%s\n' "$check" >&2; exit 1; fi
    echo "[setup] $stage: pip check findings allowed by $lock:"; printf '  %s\n' "$check"
  fi
  echo "$want" > "$stamp"
done
