#!/usr/bin/env bash
# Pack the pipeline for a paper's artefact: the workflow, configs, scripts, package, docs,
# tests, profiles, environment files (conda) and lock files, with a SHA256SUMS manifest;
# optionally the results too (with their checksums, and Snakemake's records of them from the
# .snakemake/metadata next to the results folder, so that they stay up to date where unpacked).
# Unpack anywhere and it plans and runs:
#   tar xzf effbench.tar.gz && cd effbench-* && bash scripts/setup.sh && .venvs/driver/bin/snakemake -n
# Usage:
#   bash scripts/archive.sh [-o OUT.tar.gz] [--with-results] [--results DIR (default results)]
# Files: what git tracks (nothing stray, no .venvs; of .snakemake only the packed results'
# records), plus envs/* even if not
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
  # resume checkpoints and cell locks are scratch; everything else the run produced goes in
  (cd "$(dirname "$results")" && find "$(basename "$results")" -type f ! -path '*/resume/*' ! -name .cell.lock | sort) > "$stage/results"
  (cd "$(dirname "$results")" && tar cf - -T "$stage/results") | tar xf - -C "$stage/$name"
  # Snakemake's record of each packed output (params, code, input checksums), so that unpacked
  # results are up to date: `snakemake -n` with the run's config plans nothing. The records are in
  # the run's working directory, the one holding the results folder; each is named by the output's
  # path as the run saw it (urlsafe base64, cut into folders of 254 characters, all but the last
  # prefixed '@'), so only a results path relative to the working directory finds its records.
  workdir=$(dirname "$results")
  while read -r f; do
    key=$(printf %s "$f" | base64 -w0 | tr '+/' '-_') rec=""
    while [ ${#key} -gt 254 ]; do rec+="@${key:0:254}/"; key=${key:254}; done
    rec=".snakemake/metadata/$rec$key"
    if [ -f "$workdir/$rec" ]; then echo "$rec"; fi
  done < "$stage/results" > "$stage/metadata"
  if [ -s "$stage/metadata" ]; then
    (cd "$workdir" && tar cf - -T "$stage/metadata") | tar xf - -C "$stage/$name"
  else
    echo "archive: no Snakemake records of $results in $workdir/.snakemake/metadata (a run whose results path" \
      "is absolute has none that can move): an unpacked archive re-plans these results" >&2
  fi
fi
(cd "$stage/$name" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | xargs -d '\n' sha256sum > SHA256SUMS)
tar czf "$out" -C "$stage" "$name"
echo "archive: $out ($(wc -l < "$stage/$name/SHA256SUMS") files${results:+, with $results and $(wc -l < "$stage/metadata") Snakemake records}); check with: sha256sum -c SHA256SUMS"
