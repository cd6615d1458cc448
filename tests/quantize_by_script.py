"""Shared by tests/inference and tests/fidelity: make a bf16/fp16 or int4 (RTN) checkpoint with the
pipeline's own quantize script, in the quantization environment (the serving tests run in the
inference environment, which has no llm-compressor)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUANTIZE_PY = ROOT / ".venvs" / "quantize" / "bin" / "python"


def quantize_by_script(src: Path, out: Path, precision: str, timeout: int = 600) -> Path:
    """Run scripts/quantize.py on ``src`` into ``out``; return the model folder (RTN: no corpus)."""
    s = {"model": "tiny", "precision": precision, "weight_bits": 4 if precision == "int4" else 16, "threads": 1,
         "device": "cpu", "seed": 0, "measure": {"interval_s": 0.1}, "source": {"kind": "path", "ref": str(src)}}
    if precision == "int4":
        s["int4"] = {"method": "rtn", "group_size": 128, "symmetric": True, "ignore": ["lm_head"],
                     "dampening_frac": 0.01, "calibration": {"samples": 1, "seq_length": 8}}
    p = subprocess.run([str(QUANTIZE_PY), str(ROOT / "scripts" / "quantize.py"), "--settings", json.dumps(s),
                        "--config-hash", "test", "--source-dir", str(src), "--out-dir", str(out / "model"),
                        "--record", str(out / "record.parquet"), "--samples", str(out / "samples.parquet")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    return out / "model"
