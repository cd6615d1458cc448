"""The shipped configs resolve exactly the settings in tests/unit/data/settings_snapshot.json: same
cells, same settings, so a change to the config code re-runs no cell and changes no record.

A deliberate change of a shipped config (or of what a setting means) rewrites the snapshot with
`python tests/unit/settings_snapshot.py`, in the same commit. History: the snapshot was first
written by the single-module config.py the package replaced (the package matched it but for the
`hf_id` -> `hf` rename of paper.yaml's fine-tuning models); it was rewritten when paper.yaml got
its memory-planner fixes (micro-batch 2, no 1.5B×8 MoE) and when the embedded default's corpus,
tasks and serving grid changed, and when paper.yaml got the Table 6 families (their cells only)."""

from __future__ import annotations

import json

import pytest
from settings_snapshot import CONFIGS, SNAPSHOT, all_snapshots

from effbench.record import settings_json

@pytest.fixture(scope="module")
def now():
    return all_snapshots()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("stage", ["data", "pretrain", "export", "finetune", "quantize", "eval", "inference"])
def test_settings_match_the_snapshot(now, config, stage):
    before = json.loads(SNAPSHOT.read_text())[config][stage]
    after = now[config][stage]
    assert sorted(after) == sorted(before)  # the same cells
    for name, settings in before.items():
        assert settings_json(after[name]) == settings_json(settings), f"{config} {stage} {name}"

