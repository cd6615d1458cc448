"""Where and with what a run happened: code version, library versions, host, Slurm job."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent.parent


@lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe`` of the pipeline, marked -dirty; a source hash when not in git (an archive)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return "git:" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        h = hashlib.sha256()
        for p in sorted(PACKAGE_ROOT.rglob("*.py")):
            h.update(p.relative_to(PACKAGE_ROOT).as_posix().encode())
            h.update(p.read_bytes())
        return "src-sha256:" + h.hexdigest()[:16]


def library_versions(names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def slurm() -> dict[str, str | None]:
    """The Slurm job a run belongs to (all None outside Slurm). The GPU model is the record's
    ``device_name`` (from NVML); ``slurm_gpus`` is what Slurm allocated to the step or job."""
    env = os.environ
    return {
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_node": env.get("SLURMD_NODENAME"),
        "slurm_partition": env.get("SLURM_JOB_PARTITION"),
        "slurm_gpus": env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") if env.get("SLURM_JOB_ID") else None,
    }


def host() -> str:
    return socket.gethostname()
