"""Resume an interrupted fine-tuning cell from its last trainer checkpoint.

With ``finetune.training.checkpoint_interval`` = N, Hugging Face's Trainer (under LlamaFactory)
writes ``checkpoint-<step>`` folders into the cell's output dir every N optimizer steps: the
adapter (or model), optimizer, scheduler, RNG and trainer state. The Trainer's own writes are
not atomic (a kill mid-save leaves a partial folder), so a checkpoint counts only once
:class:`MarkCheckpoints` has written :data:`MARKER` into it, after the Trainer finished saving:
the marker holds the cell's settings text, and a checkpoint is resumed only for the same text
(as pretraining's resume file is). The two newest checkpoints are kept, so the older one is
complete while the newer is being written. Light: transformers is imported only by
:func:`mark_checkpoints_callback`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from ..atomic import write_text

log = logging.getLogger("effbench.finetune")
MARKER = "effbench_settings.json"
KEEP = 2  # checkpoints the Trainer keeps (save_total_limit)
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_args(interval: int | None) -> dict[str, Any]:
    """The Trainer's save keys for ``checkpoint_interval`` (None: only the final adapter is saved)."""
    if interval is None:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": int(interval), "save_total_limit": KEEP}


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(found)


def _usable(path: Path, settings_text: str) -> bool:
    """Complete (marked), written for these settings, and short of the end of training (a
    checkpoint at the last step leaves nothing to run, so nothing to measure)."""
    try:
        if json.loads((path / MARKER).read_text())["settings"] != settings_text:
            log.info("not resuming %s: it was written for other settings", path)
            return False
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError, KeyError):
        log.info("not resuming %s: incomplete (the job was killed while it was saved)", path)
        return False
    return int(state["global_step"]) < int(state["max_steps"])


def find_resumable(output_dir: Path, settings_text: str) -> Path | None:
    """The newest usable checkpoint in ``output_dir``; every other checkpoint folder is deleted
    (partial, stale, or for other settings: the Trainer's rotation must not keep them)."""
    chosen = None
    for _, path in reversed(_checkpoints(output_dir)):
        if chosen is None and _usable(path, settings_text):
            chosen = path
        else:
            shutil.rmtree(path)
    if chosen is not None:
        log.info("resuming from %s", chosen)
    return chosen


def remove_checkpoints(output_dir: Path) -> None:
    """After a finished run: the trainer checkpoints go, the saved adapter/model stays."""
    for _, path in _checkpoints(output_dir):
        shutil.rmtree(path)


def mark_checkpoint(path: Path, settings_text: str) -> None:
    write_text(path / MARKER, json.dumps({"settings": settings_text}) + "\n")


def mark_checkpoints_callback(settings_text: str) -> Any:
    """A TrainerCallback that marks each checkpoint complete once the Trainer has saved it."""
    from transformers import TrainerCallback

    class MarkCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kw):  # noqa: ANN001 - Trainer's signature
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir() and args.should_save:
                mark_checkpoint(path, settings_text)

    return MarkCheckpoints()
