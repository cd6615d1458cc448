"""A disk that fills while checkpointing: a clear 'no space left on <folder>' error, and the
previous checkpoint untouched (written beside it, then renamed over it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the shared small-filesystem helper
from small_fs import small_fs  # noqa: E402

from effbench.atomic import NoSpaceError  # noqa: E402
from effbench.pretrain.train import _save  # noqa: E402


def test_disk_full_while_checkpointing_names_the_folder_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    with small_fs(tmp_path / "ckpt", "1m") as disk:
        target = disk / "resume.pt"
        _save(target, {"step": 10, "model": torch.nn.Linear(16, 16).state_dict()})
        before = target.read_bytes()
        big = {"step": 20, "model": {"w": torch.ones(1024, 1024)}}  # 4 MiB on a 1 MiB filesystem
        with pytest.raises(NoSpaceError, match=rf"no space left on {disk} while writing resume.pt; "
                                               "the previous resume.pt is intact"):
            _save(target, big)
        assert target.read_bytes() == before
        assert [p.name for p in disk.iterdir()] == ["resume.pt"]  # no half-written temporary left
        assert torch.load(target, weights_only=True)["step"] == 10
