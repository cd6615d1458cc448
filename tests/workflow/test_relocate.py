"""A finished run stays finished wherever it goes: its working folder copied elsewhere, the
repository moved, or the archive (scripts/archive.sh --with-results) unpacked elsewhere, and
`snakemake -n` plans nothing, with no job left without provenance."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from workflow_helpers import ROOT, minimal_config, needs_pretrain_env, planned_jobs, snakemake

pytestmark = needs_pretrain_env


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    """The pretraining-only minimal pipeline, run to the end; its results path is relative (the
    default `results`), so it lives in the working folder."""
    work = tmp_path_factory.mktemp("finished")
    config = minimal_config(Path("results"), later_stages=False)
    snakemake(work, config)
    return work, config


def assert_nothing_to_do(p: subprocess.CompletedProcess) -> None:
    log = p.stdout + p.stderr
    assert planned_jobs(p.stdout) == [], log[-6000:]
    assert "Nothing to be done" in log, log[-6000:]
    assert "missing provenance" not in log, log[-6000:]


def test_a_finished_run_plans_nothing_where_it_ran(finished):
    work, config = finished
    assert_nothing_to_do(snakemake(work, config, "-n"))


def test_a_copied_working_folder_plans_nothing(finished, tmp_path):
    work, config = finished
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(work, moved, symlinks=True)  # copy2: results keep their times, as `cp -a` would
    assert_nothing_to_do(snakemake(moved, config, "-n"))


def copy_of_checkout(repo: Path) -> Path:
    """This checkout's tracked files, elsewhere, with the same environments."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for f in tracked.splitlines():
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    (repo / ".venvs").symlink_to((ROOT / ".venvs").resolve())
    return repo


def test_a_moved_repository_plans_nothing(finished, tmp_path):
    work, config = finished
    assert_nothing_to_do(snakemake(work, config, "-n", repo=copy_of_checkout(tmp_path / "moved-repo")))


def test_an_edited_environment_file_still_reruns_its_stage(finished, tmp_path):
    """The environment files left the inputs for a digest param: editing one still re-runs."""
    work, config = finished
    repo = copy_of_checkout(tmp_path / "edited-repo")
    with (repo / "envs" / "pretrain.lock.txt").open("a") as f:
        f.write("# edited\n")
    p = snakemake(work, config, "-n", repo=repo)
    jobs = {j.split("[")[0] for j in planned_jobs(p.stdout)}
    assert {"pretrain_data", "pretrain", "export_hf"} <= jobs and "Params have changed" in p.stdout + p.stderr, \
        (p.stdout + p.stderr)[-6000:]


def test_an_unpacked_archive_with_results_plans_nothing(finished, tmp_path):
    work, config = finished
    out = tmp_path / "effbench.tar.gz"
    stray = work / ".snakemake" / "metadata" / base64.urlsafe_b64encode(b"elsewhere/out.txt").decode()
    stray.write_text("{}")  # a record of a file that is not among the results: it stays behind
    subprocess.run(["bash", str(ROOT / "scripts" / "archive.sh"), "-o", str(out), "--results", str(work / "results")],
                   check=True, capture_output=True, text=True, timeout=300)
    with tarfile.open(out) as t:
        packed = [Path(m.name) for m in t.getmembers() if m.isfile() and "/.snakemake/" in m.name]
        t.extractall(tmp_path / "unpacked", filter="data")
    (top,) = (tmp_path / "unpacked").iterdir()
    # the records of the packed results, and only theirs (no locks, no stray record)
    assert all(p.parent.name == "metadata" and p.parent.parent.name == ".snakemake" for p in packed), packed
    recorded = [p.name for p in (work / ".snakemake" / "metadata").iterdir() if p.is_file() and p != stray]
    assert sorted(p.name for p in packed) == sorted(recorded)
    assert_nothing_to_do(snakemake(top, config, "-n", repo=top))
