"""Each stage's environment: its interpreter (``environments.<stage>`` or the local venv) and
the files that define it."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Mapping

from ..provenance import REPO_ROOT
from .errors import ConfigError

# Every stage that has its own environment; rules name theirs.
STAGES = ("driver", "pretrain", "finetune", "quantize", "inference")
ENVS_DIR = REPO_ROOT / "envs"
SRC = REPO_ROOT / "src"


def _check(stage: str) -> None:
    if stage not in STAGES:
        raise ConfigError(f"unknown stage environment {stage!r}; stages: {', '.join(STAGES)}")


def stage_python(environments: Mapping[str, str], stage: str) -> str:
    """The interpreter of a stage's environment: ``environments.<stage>``, else the local venv."""
    _check(stage)
    env = environments.get(stage)
    return str(Path(env).expanduser()) if env else str(REPO_ROOT / ".venvs" / stage / "bin" / "python")


def with_package(command: str) -> str:
    """A command prefix that runs with this repository's package importable."""
    return f"PYTHONPATH={shlex.quote(str(SRC))} {command}"


def env_files(stage: str) -> list[Path]:
    """The files that define a stage's environment: the local lock and the cluster's conda file."""
    _check(stage)
    return [p for p in (ENVS_DIR / f"{stage}.lock.txt", ENVS_DIR / f"{stage}.yaml") if p.exists()]


def env_digest(stage: str) -> str:
    """Which environment a stage runs in, by content: each defining file's name and SHA-256.

    Rules carry it as a param, so editing either file re-runs the cells that use the stage, while
    moving the repository re-runs nothing (Snakemake records an input's path, and a path outside
    the working directory changes with a move; touching a file without a change re-runs nothing).
    """
    return " ".join(f"{p.name}:sha256:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in env_files(stage))
