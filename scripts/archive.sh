#!/usr/bin/env bash
# Pack the pipeline for a paper's artefact: the workflow, configs, scripts, package, docs,
# tests, profiles, environment files (conda) and lock files, with a SHA256SUMS manifest;
# optionally the results too (with their checksums). Unpack anywhere and it plans and runs:
#   tar xzf effbench.tar.gz && cd effbench-* && bash scripts/setup.sh && .venvs/driver/bin/snakemake -n
# Usage:
#   bash scripts/archive.sh [-o OUT.tar.gz] [--with-results] [--results DIR (default results)]
# Files: what git tracks (so nothing stray, no .venvs or .snakemake), plus envs/* even if not
# yet committed; outside git, every file but results/, .venvs/, .snakemake/ and caches.
# On the cluster, `snakemake --archive FILE.tar.gz` is Snakemake's own alternative (the
# workflow's tracked sources and inputs, no results).
set -euo pipefail
cd "$(dirname "$0")/.."
out=""
results=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    --with-results) results=${results:-results}; shift ;;
    --results) results=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "archive: unknown argument $1" >&2; exit 2 ;;
  esac
done
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  version=$(git describe --always --dirty --abbrev=12)
  list() { { git ls-files; ls envs/*; } | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done; }
else
  version="nogit-$(date -u +%Y%m%dT%H%M%SZ)"
  list() {
    find . -type f ! -path './results/*' ! -path './.venvs/*' ! -path './.snakemake/*' \
      ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path './.pytest_cache/*' ! -name SHA256SUMS | sed 's|^\./||' | sort
  }
fi
name="effbench-$version"
out=${out:-$name.tar.gz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name"
list > "$stage/files"
tar cf - -T "$stage/files" | tar xf - -C "$stage/$name"
echo "$version" > "$stage/$name/VERSION"
if [ -n "$results" ]; then
  [ -d "$results" ] || { echo "archive: no results directory $results" >&2; exit 1; }
  # resume checkpoints are scratch; everything else the run produced goes in
  (cd "$(dirname "$results")" && find "$(basename "$results")" -type f ! -path '*/resume/*' | sort) > "$stage/results"
  (cd "$(dirname "$results")" && tar cf - -T "$stage/results") | tar xf - -C "$stage/$name"
fi
(cd "$stage/$name" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | xargs -d '\n' sha256sum > SHA256SUMS)
tar czf "$out" -C "$stage" "$name"
echo "archive: $out ($(wc -l < "$stage/$name/SHA256SUMS") files${results:+, with $results}); check with: sha256sum -c SHA256SUMS"
