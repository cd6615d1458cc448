"""Every lm-eval task config/paper.yaml names builds offline in the inference environment: its
YAML, its `!function` utils and what they import (IFEval: langdetect, immutabledict, nltk;
MATH-hard: math-verify, antlr4 4.11, sympy), its metrics, up to the point where it would load
its dataset (the datasets are not here; preflight checks them in the cache). Runs the probe
that `effbench preflight` runs in this environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from effbench.preflight.probe import lm_eval_tasks

ROOT = Path(__file__).resolve().parents[2]
TASKS = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["eval"]["tasks"]


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # nltk's tokenizer data in a folder of the test's own, so IFEval's import-time check finds it
    # (without it the probe records the download IFEval would attempt: tested below).
    nltk = tmp_path_factory.mktemp("nltk")
    (nltk / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("NLTK_DATA", str(nltk))
    try:
        return lm_eval_tasks(TASKS, None)
    finally:
        mp.undo()


def test_the_paper_names_six_leaderboard_tasks() -> None:
    assert len(TASKS) == 6 and all(t.startswith("leaderboard_") for t in TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_every_subtask_builds_offline_up_to_its_dataset(probed: dict, task: str) -> None:
    t = probed["tasks"][task]
    assert t["error"] is None, t["error"]
    assert t["leaves"], f"{task} has no subtasks"
    failed = {leaf["task"]: leaf["error"] for leaf in t["leaves"] if leaf["error"]}
    assert not failed, failed
    assert all(leaf["dataset_path"] for leaf in t["leaves"])


def test_no_nltk_download_is_attempted_when_its_data_is_present(probed: dict) -> None:
    assert probed["nltk_missing"] == []
