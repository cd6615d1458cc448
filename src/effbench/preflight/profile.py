"""What a Snakemake profile gives each rule's jobs: run time (minutes) and host memory, by rule
name (``set-resources.<rule>``, else ``default-resources``), and how often a failed job is
retried. Values the profile writes as Python expressions that are not plain numbers are
reported as unknown, not guessed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Profile:
    path: Path
    data: dict[str, Any]

    def resource(self, rule: str, name: str) -> float | None:
        for section in ((self.data.get("set-resources") or {}).get(rule) or {}, self.data.get("default-resources") or {}):
            if name in section:
                try:
                    return float(section[name])
                except (TypeError, ValueError):
                    return None
        return None

    def runtime_min(self, rule: str) -> float | None:
        return self.resource(rule, "runtime")

    @property
    def retries(self) -> int:
        return int(self.data.get("retries") or 0)

    def key(self, rule: str, name: str) -> str:
        return f"{self.path}: set-resources.{rule}.{name}"


def load_profile(folder: str | Path) -> Profile:
    path = Path(folder) / "config.yaml"
    return Profile(path, yaml.safe_load(path.read_text()) or {})
