#!/usr/bin/env bash
# Run by scripts/setup.sh after installing envs/finetune.lock.txt into the venv given as $1.
#
# LlamaFactory 0.9.5 imports torchaudio unconditionally (llamafactory/data/mm_plugin.py), but
# PyPI's torchaudio wheels are CUDA builds whose compiled extension cannot load beside the CPU
# torch 2.13.0 (libc10_cuda.so missing). torchaudio itself supports running without its
# extension (it checks for the library files and continues in pure Python, as in a pex
# deployment), so we delete the three CUDA-linked libraries: `import torchaudio` works and its
# Python parts (e.g. functional.resample) run; the C++ ops (forced alignment, CTC decoder)
# are absent. Text SFT never calls any of it. Details: docs/llamafactory.md.
set -euo pipefail
venv=$1
lib=$("$venv/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchaudio")
print(pathlib.Path(spec.origin).parent / "lib")
PY
)
rm -f "$lib"/*.so
"$venv/bin/python" -c "import torchaudio, torchaudio.functional; assert not torchaudio._extension._IS_TORCHAUDIO_EXT_AVAILABLE"
