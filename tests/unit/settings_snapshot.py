"""Every cell's resolved settings for the shipped configs, as the rules pass them on.

`python tests/unit/settings_snapshot.py` rewrites tests/unit/data/settings_snapshot.json (it was
written by the config.py this package replaced, with cfg.load_config and cfg.serve_cells);
test_settings_snapshot.py checks the config package still resolves exactly these settings
(a changed setting re-runs its cell and changes its record)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("data") / "settings_snapshot.json"
CONFIGS = ("config.yaml", "paper.yaml")


def snapshot(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """stage -> cell name -> resolved settings (data: the corpus and task settings of the data rules)."""
    from effbench import config as cfg

    p = cfg.plan(config)
    serve = p.serve
    ft_tasks = (p.config.get("finetune") or {}).get("tasks", {})
    return {
        "data": {"pretrain": p.config["data"]["pretrain"], **{f"finetune/{k}": v for k, v in ft_tasks.items()}},
        "pretrain": {c.name: c.settings for c in p.pretrain},
        "export": {c.name: c.settings for c in p.exported},
        "finetune": {c.name: c.settings for c in p.finetune},
        "quantize": {c.name: c.settings for c in serve.quantize},
        "eval": {c.name: c.settings for c in serve.eval},
        "inference": {c.name: c.settings for c in serve.inference},
    }


def all_snapshots() -> dict[str, Any]:
    return {name: snapshot(yaml.safe_load((ROOT / "config" / name).read_text())) for name in CONFIGS}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    SNAPSHOT.write_text(json.dumps(all_snapshots(), sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {SNAPSHOT}")
