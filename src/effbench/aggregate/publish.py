"""Publish an aggregation's outputs all at once: every file of the new set, or none of it.

The aggregation writes into a staging folder beside its outputs (``<out>/.aggregate-<stage>.tmp``);
only when every writer has succeeded are the files moved into place, the manifest last. The
previous set is moved aside first and put back if any move fails, so a failed aggregation
leaves the previous tables, leaderboard, plots and manifest exactly as they were, and never a
mix of stale and fresh files. Files of the previous set that the new one no longer has (a plot
no longer drawn) are removed: the manifest's ``outputs`` lists the set it completes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def staging_dir(out: Path, stage: str) -> Path:
    return Path(out) / f".aggregate-{stage}.tmp"


@contextmanager
def staged(out: Path, stage: str) -> Iterator[Path]:
    """Yield an empty staging folder; publish it into ``out`` when the block succeeds (the block
    must write ``<stage>.manifest.json`` there), drop it when the block fails."""
    staging = staging_dir(out, stage)
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    staging.mkdir(parents=True)
    try:
        yield staging
        publish(staging, Path(out), f"{stage}.manifest.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts


def previous_outputs(manifest: Path) -> list[str]:
    """The files the manifest at ``manifest`` says its set holds (none if it is absent or unreadable)."""
    try:
        listed = json.loads(manifest.read_text()).get("outputs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in listed if isinstance(r, str) and _safe(r)]


def publish(staging: Path, out: Path, manifest_rel: str) -> list[str]:
    """Move every file under ``staging`` to the same place under ``out``, the manifest last (its
    ``outputs`` set to the list of files); return that list. All or nothing: see the module doc."""
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    if manifest_rel not in files:
        raise RuntimeError(f"the aggregation wrote no {manifest_rel}; nothing published")
    files.remove(manifest_rel)
    manifest = json.loads((staging / manifest_rel).read_text())
    manifest["outputs"] = files
    (staging / manifest_rel).write_text(json.dumps(manifest, indent=2) + "\n")
    # The old manifest goes aside first: without a manifest no set claims to be complete.
    old = [manifest_rel] + sorted(set(files) | set(previous_outputs(out / manifest_rel)))
    aside = staging / ".previous"
    moved_aside: list[str] = []
    placed: list[str] = []
    try:
        for rel in old:
            if os.path.lexists(out / rel):
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(out / rel, aside / rel)
                moved_aside.append(rel)
        for rel in files + [manifest_rel]:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, out / rel)
            placed.append(rel)
    except BaseException:
        for rel in reversed(placed):
            os.unlink(out / rel)
        for rel in reversed(moved_aside):
            os.replace(aside / rel, out / rel)
        raise
    return files
