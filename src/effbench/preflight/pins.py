"""The versions a stage's environment file asks for: ``envs/<stage>.lock.txt`` (the local venv,
a full pip freeze) or the ``pip:`` list of ``envs/<stage>.yaml`` (the cluster's conda
environment, used when ``environments.<stage>`` names an interpreter)."""

from __future__ import annotations

from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..config.environments import ENVS_DIR


def _parse(lines: list[str]) -> dict[str, SpecifierSet]:
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue  # not a pip requirement (an option line)
        out[canonicalize_name(req.name)] = req.specifier
    return out


def lock_pins(stage: str, envs_dir: Path = ENVS_DIR) -> dict[str, SpecifierSet]:
    path = envs_dir / f"{stage}.lock.txt"
    return _parse(path.read_text().splitlines()) if path.exists() else {}


def conda_pip_pins(stage: str, envs_dir: Path = ENVS_DIR) -> dict[str, SpecifierSet]:
    path = envs_dir / f"{stage}.yaml"
    if not path.exists():
        return {}
    deps = (yaml.safe_load(path.read_text()) or {}).get("dependencies") or []
    pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])
    return _parse([str(x) for x in pip])


def expected_pins(stage: str, conda: bool, envs_dir: Path = ENVS_DIR) -> tuple[dict[str, SpecifierSet], str]:
    """(pins, the file they come from) for a stage run from its venv (lock) or conda (yaml)."""
    if conda:
        return conda_pip_pins(stage, envs_dir), f"envs/{stage}.yaml"
    return lock_pins(stage, envs_dir), f"envs/{stage}.lock.txt"


def satisfies(installed: str, spec: SpecifierSet) -> bool:
    """PEP 440 match; a local label (2.13.0+cpu) satisfies a public pin (==2.13.0)."""
    try:
        return spec.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        return False
