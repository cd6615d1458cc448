"""Preflight keeps what does not change between calls (issue #23 item 7): a stage's imports,
versions and lm-eval task builds are kept under a folder named by the digest of the stage's
environment files, and reused while the lock file, the interpreter's site-packages and the probe
are unchanged; the Hugging Face cache lookups are asked again every time.

The "stage interpreter" is the driver's own Python, probed for real in a subprocess; the module
it imports records each import in a file, so the test sees when the probe really imported it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from effbench.preflight import environments as envs
from effbench.preflight.environments import StageProbe, cached_probe


@pytest.fixture()
def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    lock_dir = tmp_path / "envs"
    lock_dir.mkdir()
    (lock_dir / "pretrain.lock.txt").write_text("packaging==24.0\n")
    monkeypatch.setattr("effbench.config.environments.ENVS_DIR", lock_dir)
    mods = tmp_path / "mods"
    mods.mkdir()
    counter = tmp_path / "imported.txt"
    (mods / "effbench_fake_stage_lib.py").write_text(
        f"with open({str(counter)!r}, 'a') as f:\n    f.write('x')\n")
    monkeypatch.setenv("PYTHONPATH", str(mods))
    monkeypatch.setenv(envs.CACHE_ENV, str(tmp_path / "cache"))
    return {"lock": lock_dir / "pretrain.lock.txt", "counter": counter, "cache": tmp_path / "cache"}


def _probe(hub: list | None = None) -> StageProbe:
    return StageProbe("pretrain", sys.executable, ["effbench_fake_stage_lib"], ["packaging"], hub=hub or [])


def _imports(counter: Path) -> int:
    return len(counter.read_text()) if counter.exists() else 0


def test_a_second_call_reuses_the_imports_and_a_changed_lock_probes_again(stage: dict[str, Path]) -> None:
    first = _probe()
    cached_probe(first)
    assert first.failure is None and first.result["imports"] == {"effbench_fake_stage_lib": None}
    assert _imports(stage["counter"]) == 1
    kept = list(stage["cache"].glob("pretrain-*/*.json"))
    assert len(kept) == 1

    second = _probe()
    cached_probe(second)
    assert _imports(stage["counter"]) == 1  # nothing imported again: no subprocess at all
    assert second.result["imports"] == first.result["imports"]
    assert second.result["versions"] == first.result["versions"]

    stage["lock"].write_text("packaging==25.0\n")  # the lock changed: a new folder, the old one gone
    third = _probe()
    cached_probe(third)
    assert _imports(stage["counter"]) == 2
    now = list(stage["cache"].glob("pretrain-*/*.json"))
    assert len(now) == 1 and now[0].parent != kept[0].parent


def test_cache_lookups_are_asked_every_time(stage: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = {"key": "quantize.models.m", "kind": "model", "repo_id": "org/model", "config": None}
    cached_probe(_probe([ref]))
    again = _probe([ref])
    cached_probe(again)
    assert _imports(stage["counter"]) == 1  # the imports were kept ...
    assert again.failure is None
    got = again.result["hub"]["quantize.models.m"]  # ... the lookup was made, in a subprocess
    assert got.get("missing") or got.get("error"), got


def test_a_failed_import_is_not_kept(stage: dict[str, Path]) -> None:
    bad = StageProbe("pretrain", sys.executable, ["effbench_no_such_module"], [])
    cached_probe(bad)
    assert bad.result["imports"]["effbench_no_such_module"].startswith("ModuleNotFoundError")
    assert not list(stage["cache"].glob("pretrain-*/*.json"))


def test_nltk_data_arriving_makes_a_kept_task_build_stale(tmp_path: Path) -> None:
    nltk_dir = tmp_path / "nltk_data"
    nltk_dir.mkdir()
    path = tmp_path / "cache" / "inference-0" / "k.json"
    result = {"python": "p", "version": "3.11", "imports": {}, "versions": {},
              "lm_eval": {"tasks": {}, "nltk_missing": ["punkt_tab"], "nltk_path": [str(nltk_dir)]}}
    envs._store(path, result)
    assert envs._load(path)["lm_eval"]["nltk_missing"] == ["punkt_tab"]
    (nltk_dir / "tokenizers" / "punkt_tab").mkdir(parents=True)  # python -m nltk.downloader punkt_tab
    assert envs._load(path) is None


def test_the_cache_can_be_turned_off(stage: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envs.CACHE_ENV, "off")
    for _ in range(2):
        cached_probe(_probe())
    assert _imports(stage["counter"]) == 2 and not stage["cache"].exists()
