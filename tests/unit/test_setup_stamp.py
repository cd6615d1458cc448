"""scripts/setup.sh rebuilds a stage's venv when what builds it changes: its lock file or its
post-install script. Run for real on a scratch copy of the script with a one-comment lock (no
package to install; PIP_NO_INDEX keeps pip's self-upgrade local, so a build takes seconds)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _repo(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "envs").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    for stage in ("probe", "plain"):
        (tmp_path / "envs" / f"{stage}.lock.txt").write_text(f"# {stage}: nothing to install\n")
    # The post-install hook logs outside the venv, which a rebuild deletes.
    (tmp_path / "envs" / "probe.post-install.sh").write_text(f'echo ran >> "{tmp_path}/post.log"\n')
    return tmp_path


def _seed(repo: Path, stage: str, stamp: str) -> None:
    """A venv setup.sh considers built: an interpreter and a stamp."""
    bin_dir = repo / ".venvs" / stage / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (repo / ".venvs" / stage / ".lock.sha256").write_text(stamp + "\n")


def _setup(repo: Path, stage: str) -> str:
    p = subprocess.run(["bash", "scripts/setup.sh", stage], cwd=repo, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PIP_NO_INDEX": "1", "PYTHON": sys.executable})
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def _sha(*files: Path) -> str:
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def test_stamp_is_lock_plus_post_install_and_a_changed_hook_rebuilds(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    lock, post = repo / "envs" / "probe.lock.txt", repo / "envs" / "probe.post-install.sh"
    _seed(repo, "probe", _sha(lock, post))
    assert "probe: up to date" in _setup(repo, "probe")
    assert not (repo / "post.log").exists()

    post.write_text(post.read_text() + "# changed\n")
    assert "probe: building" in _setup(repo, "probe")
    assert (repo / "post.log").read_text() == "ran\n"
    assert (repo / ".venvs" / "probe" / ".lock.sha256").read_text().strip() == _sha(lock, post)
    assert "probe: up to date" in _setup(repo, "probe")


def test_stage_without_post_install_keeps_the_lock_hash(tmp_path: Path) -> None:
    """Venvs built before the hook was hashed are not rebuilt for nothing."""
    repo = _repo(tmp_path)
    _seed(repo, "plain", _sha(repo / "envs" / "plain.lock.txt"))
    assert "plain: up to date" in _setup(repo, "plain")
