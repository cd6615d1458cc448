"""Prepare a fine-tuning task's folder for LlamaFactory: ``dataset_info.json`` and ``task.json``.

- ``synthetic``: the instruction task the pipeline makes offline from its synthetic world
  (:func:`effbench.data.instructions.make_sft_task`): short answers, a held-out eval file,
  so held-out loss and exact-match accuracy are both measured.
- ``hf``: a Hugging Face dataset id (e.g. ``O1-OPEN/OpenO1-SFT``), read by LlamaFactory
  (from the local cache, or downloaded on a machine that may).
- ``local``: a JSON / JSONL / Parquet file on disk.

``task.json`` names the train (and eval) datasets and, where there is one, the file of
held-out items for exact match. Light: no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.instructions import make_sft_task

TASK_META = "task.json"


def _dataset_entry(t: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"formatting": "alpaca", "columns": dict(t.get("columns") or {})}
    for k in ("subset", "split"):
        if t.get(k):
            entry[k] = t[k]
    return entry


def prepare_task(name: str, t: dict[str, Any], out_dir: Path, seed: int) -> dict[str, Any]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = t["source"]
    if source == "synthetic":
        s = t["synthetic"]
        summary = make_sft_task(out_dir, n_train=s["n_train"], n_eval=s["n_eval"], seed=seed)
        meta = {"task": name, "source": source, "datasets": summary["datasets"],
                "exact_match_file": summary["files"]["eval"], "kinds": summary["kinds"]}
    else:
        entry = _dataset_entry(t)
        if source == "hf":
            entry["hf_hub_url"] = t["hf_id"]
        else:  # local: LlamaFactory joins file_name onto dataset_dir; an absolute path stays absolute
            entry["file_name"] = str(Path(t["path"]).expanduser().resolve())
        info = {f"effbench_{name}": entry}
        (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
        meta = {"task": name, "source": source, "datasets": {"train": f"effbench_{name}"}, "exact_match_file": None}
    (out_dir / TASK_META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
