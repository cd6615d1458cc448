"""Atomic file writes: write beside the target, fsync, then rename over it.

A job killed mid-write leaves at most a stray ``.tmp`` file, never a target that looks
complete, and never clobbers an earlier good file with a half-written one. A write that
fills the disk raises :class:`NoSpaceError` saying so, whatever the writer's own message was
(torch.save says ``unexpected pos`` or ``iostream error``).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NoSpaceError(OSError):
    """The filesystem filled up while writing a file; the file's previous version is intact."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT error behind ``exc`` (itself, or what it was raised from or during)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _FULL:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    Write through a Python file object (``open(tmp, "wb")``) rather than handing the path to a
    C++ writer: then a full disk surfaces as ENOSPC and becomes a :class:`NoSpaceError`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if tmp.is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as exc:
        full = disk_full(exc)
        if full is None:
            raise
        kept = f"the previous {target.name} is intact" if target.exists() else f"no {target.name} was written"
        raise NoSpaceError(full.errno, f"no space left on {target.parent} while writing {target.name}; {kept}") from exc
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
