"""The config package resolves exactly the settings the shipped configs resolved before it was
split into modules (tests/unit/data/settings_snapshot.json, written from the old
src/effbench/config.py): same cells, same settings, so no cell re-runs and no record changes.

One documented difference: a model's Hugging Face reference is spelt `hf` everywhere; paper.yaml's
fine-tuning models spelt it `hf_id`, so their `model_source` reads {"hf": ...} now
(config/README.md)."""

from __future__ import annotations

import json

import pytest
from settings_snapshot import CONFIGS, SNAPSHOT, all_snapshots

from effbench.record import settings_json

RENAMED = {"hf_id": "hf"}  # fine-tuning model_source keys, old -> new


def _renamed(stage: str, settings: dict) -> dict:
    if stage != "finetune":
        return settings
    return {**settings, "model_source": {RENAMED.get(k, k): v for k, v in settings["model_source"].items()}}


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
        assert settings_json(after[name]) == settings_json(_renamed(stage, settings)), f"{config} {stage} {name}"


def test_the_rename_is_the_only_difference_and_it_happens(now):
    before = json.loads(SNAPSHOT.read_text())["paper.yaml"]["finetune"]
    renamed = [n for n, s in before.items() if "hf_id" in s["model_source"]]
    assert len(renamed) == 98 and all("hf" in now["paper.yaml"]["finetune"][n]["model_source"] for n in renamed)
