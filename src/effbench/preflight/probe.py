"""The part of preflight that runs inside a stage's own interpreter:

    <stage python> -m effbench.preflight.probe REQUEST.json RESULT.json

It imports the modules the stage's cells need, reads installed versions, looks references up
in the local Hugging Face cache (huggingface_hub's own resolution, so HF_HOME / HF_HUB_CACHE
and the stage's library versions decide, as they will in the job), and builds every lm-eval
task offline up to the point where it would load its dataset. Nothing is downloaded: the hub
and datasets are put offline, and nltk's downloader (which lm-eval's IFEval calls at import
when its tokenizer data is absent) is replaced by one that records the request.

Stdlib at import time; every stage library is imported inside a try, so a broken environment
is reported, not raised. The result goes to a file: libraries print to stdout.
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from .files import DATA_SUFFIXES, model_files

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()[:500]


def imports(modules: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for m in modules:
        try:
            importlib.import_module(m)
            out[m] = None
        except BaseException as e:  # noqa: BLE001 - a failed import may raise anything (SystemExit, OSError ...)
            out[m] = _error(e)
    return out


def versions(dists: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for d in dists:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = None
    return out


def _hub_file(repo_id: str, repo_type: str):  # type: ignore[no-untyped-def]
    from huggingface_hub import try_to_load_from_cache

    def lookup(name: str) -> str | None:
        p = try_to_load_from_cache(repo_id, name, repo_type=repo_type)
        return p if isinstance(p, str) else None  # None or _CACHED_NO_EXIST: not here

    return lookup


def _hub_data_files(repo_id: str, config: str | None) -> list[str]:
    """Data files of a dataset repository's cached snapshots (huggingface_hub's cache scan); with a
    subset, only the files whose path names it when any does (a repository often holds every
    subset's files side by side)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return []
    files: list[tuple[str, str]] = []
    for repo in info.repos:
        if repo.repo_type == "dataset" and repo.repo_id == repo_id:
            for rev in repo.revisions:
                files += [(str(f.file_path), str(f.file_path.relative_to(rev.snapshot_path)))
                          for f in rev.files if f.file_name.endswith(DATA_SUFFIXES)]
    if config:
        named = re.compile(rf"(^|[/_.-]){re.escape(config)}([/_.-]|$)")
        files = [f for f in files if named.search(f[1])] or files
    return sorted(f[0] for f in files)


def _arrow_cache(repo_id: str, config: str | None) -> list[str]:
    """Prepared copies in the datasets library's own cache (what an offline load_dataset reuses):
    <HF_DATASETS_CACHE>/<namespace>___<snake_case name>/<config>/<version>/<hash>/."""
    try:
        import datasets.config
        from datasets.naming import camelcase_to_snakecase
    except ImportError:
        return []
    parts = repo_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = Path(os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE))) / "___".join(parts)
    return sorted(glob.glob(str(root / (config or "*") / "*" / "*" / "dataset_info.json")))


def hub_reference(ref: dict[str, Any]) -> dict[str, Any]:
    """{"found": {...}, "missing": [...]} (or {"error": ...}) for one model or dataset reference."""
    try:
        if ref["kind"] == "dataset":
            hub, arrow = _hub_data_files(ref["repo_id"], ref.get("config")), _arrow_cache(ref["repo_id"], ref.get("config"))
            found = {f"file{i}": p for i, p in enumerate(hub + arrow)}
            return {"found": found, "missing": [] if found else ["data files (hub cache or datasets cache)"],
                    "data_files": hub}
        return model_files(_hub_file(ref["repo_id"], "model"), weights=ref["kind"] == "model")
    except BaseException as e:  # noqa: BLE001
        return {"error": _error(e)}


class _DatasetReached(Exception):
    """Raised by the patched loader: the task was built up to its dataset."""


def _leaves(tm: Any, name: str, factory: Any, kinds: Any) -> list[tuple[str, Any]]:
    """(leaf task name, index entry) under a task, group or tag name (lm-eval 0.4.13's index)."""
    entry = tm.task_index.get(name)
    if entry is None:
        raise KeyError(f"lm-eval knows no task, group or tag {name!r}")
    if entry.kind is kinds.TAG:
        return [leaf for n in sorted(entry.tags) for leaf in _leaves(tm, n, factory, kinds)]
    if entry.kind is kinds.GROUP:
        members = factory._load_full_config(entry, None).get("task") or []
        names = [m if isinstance(m, str) else m.get("task") for m in members]
        return [leaf for n in names if isinstance(n, str) for leaf in _leaves(tm, n, factory, kinds)]
    return [(name, entry)]


def lm_eval_tasks(tasks: list[str], include_path: str | None) -> dict[str, Any]:
    """Per configured task: its leaf tasks, each built offline up to its dataset (the task's
    YAML, its `!function` utils and their imports, metrics), with the dataset it would load."""
    os.environ.update(OFFLINE)
    wanted_nltk: list[str] = []
    try:
        import nltk

        def record_download(info_or_id: Any = None, *a: Any, **k: Any) -> bool:
            wanted_nltk.append(str(info_or_id))
            return False

        nltk.download = record_download
        from lm_eval.api import task as task_mod
        from lm_eval.tasks import TaskManager
        from lm_eval.tasks._index import Kind
    except BaseException as e:  # noqa: BLE001
        return {"error": _error(e)}

    def stop(self: Any, *a: Any, **k: Any) -> None:
        raise _DatasetReached()

    task_mod.ConfigurableTask.download = stop
    tm = TaskManager(include_path=include_path) if include_path else TaskManager()
    factory = tm._factory
    out: dict[str, Any] = {}
    for name in tasks:
        try:
            leaves = _leaves(tm, name, factory, Kind)
        except BaseException as e:  # noqa: BLE001
            out[name] = {"error": _error(e), "leaves": []}
            continue
        rows = []
        for leaf, entry in leaves:
            row: dict[str, Any] = {"task": leaf, "error": None, "dataset_path": None, "dataset_name": None}
            try:
                cfg = factory._load_full_config(entry, None)
                row["dataset_path"], row["dataset_name"] = cfg.get("dataset_path"), cfg.get("dataset_name")
                factory._build_task(entry, None)
                row["error"] = "built without reaching its dataset (not a dataset-backed task?)"
            except _DatasetReached:
                pass
            except BaseException as e:  # noqa: BLE001
                row["error"] = _error(e)
            rows.append(row)
        out[name] = {"error": None, "leaves": rows}
    nltk_missing = sorted(set(wanted_nltk))
    return {"tasks": out, "nltk_missing": nltk_missing,
            "nltk_path": [str(p) for p in __import__("nltk").data.path]}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    if request.get("offline", True):
        os.environ.update(OFFLINE)
    result: dict[str, Any] = {"python": sys.executable, "version": sys.version.split()[0]}
    try:
        result["imports"] = imports(request.get("imports", []))
        result["versions"] = versions(request.get("versions", []))
        result["hub"] = {r["key"]: hub_reference(r) for r in request.get("hub", [])}
        if request.get("lm_eval"):
            ev = request["lm_eval"]
            result["lm_eval"] = lm_eval_tasks(ev["tasks"], ev.get("include_path"))
            datasets = {(leaf["dataset_path"], leaf["dataset_name"])
                        for t in result["lm_eval"].get("tasks", {}).values() for leaf in t["leaves"]
                        if leaf["dataset_path"]}
            result["lm_eval_data"] = {f"{p}|{n or ''}": hub_reference({"kind": "dataset", "repo_id": p, "config": n})
                                      for p, n in sorted(datasets, key=str)}
        if request.get("lm_eval_datasets"):  # the task builds came from the driver's cache: only look these up
            result["lm_eval_data"] = {f"{p}|{n or ''}": hub_reference({"kind": "dataset", "repo_id": p, "config": n})
                                      for p, n in request["lm_eval_datasets"]}
    except BaseException:  # noqa: BLE001 - report, never die without a result
        result["crash"] = traceback.format_exc()[-2000:]
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
