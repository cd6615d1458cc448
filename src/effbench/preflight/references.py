"""Models, tokenizers and datasets: each reference resolves in the local Hugging Face cache or
on disk, with the files its stage reads.

Hugging Face ids are looked up by the stage that loads them, inside its own interpreter
(:mod:`probe`: ``huggingface_hub.try_to_load_from_cache`` / ``scan_cache_dir``, honouring
HF_HOME and HF_HUB_CACHE as the job will); where that interpreter could not be probed, a model
or tokenizer id is looked up by the driver in the same cache layout
(:mod:`effbench.config.hub_cache`, what the DAG build checks offline); paths are checked here. What a reference needs:
a model its config.json, tokenizer (tokenizer_config.json + tokenizer.json or
tokenizer.model) and every safetensors shard its index names; a dataset at least one data file
in the hub cache or a prepared copy in the datasets cache; a pretraining corpus data files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.hub_cache import cached_files
from ..config.paths import data_paths, tokenizer_is_path
from ..config.loaded import Plan
from .environments import StageProbe
from .files import data_files, folder_lookup, model_files
from .rows import Row, ok, problem, skip

CHECK = "reference"


@dataclass(frozen=True)
class Ref:
    key: str  # the config key that names it
    stage: str  # whose interpreter loads it
    kind: str  # model, tokenizer, dataset
    ref: dict[str, str]  # {"hf": id} | {"path": p} | {"pretrained": cell} | {"synthetic": ""}
    config: str | None = None  # a dataset's subset


@dataclass
class Resolved:
    """What the references check learnt for the later checks: each model's config.json and each
    dataset's data files (None where the reference did not resolve)."""

    model_config: dict[str, dict[str, Any] | None]  # by config key of the model
    data_files: dict[str, list[str]]  # by config key of the dataset


def references(plan: Plan) -> list[Ref]:
    c = plan.config
    out: list[Ref] = []
    ft = c.get("finetune") or {}
    if plan.finetune:
        used_models = {x.model for x in plan.finetune}
        used_tasks = {x.task for x in plan.finetune}
        for name in sorted(used_models):
            src = next(x.source for x in plan.finetune if x.model == name)
            out.append(Ref(f"finetune.models.{name}", "finetune", "model", src.reference))
        for name in sorted(used_tasks):
            t = ft["tasks"][name]
            ref = {"hf": t["hf_id"]} if t["source"] == "hf" else \
                {"path": t["path"]} if t["source"] == "local" else {"synthetic": ""}
            out.append(Ref(f"finetune.tasks.{name}", "finetune", "dataset", ref, t.get("subset")))
    for name in sorted({x.model for x in plan.serve.quantize}):
        src = next(x.source for x in plan.serve.quantize if x.model == name)
        out.append(Ref(f"quantize.models.{name}", "quantize", "model", src.reference))
    d = c["data"]["pretrain"]
    if plan.pretrain and d["source"] == "shards":
        out.append(Ref("data.pretrain.shards.path", "pretrain", "dataset", {"path": d["shards"]["path"]}))
        tok = d["shards"]["tokenizer"]
        out.append(Ref("data.pretrain.shards.tokenizer", "pretrain", "tokenizer",
                       {"path": tok} if tokenizer_is_path(tok) else {"hf": tok}))
    return out


def add_lookups(refs: list[Ref], probes: dict[str, StageProbe]) -> None:
    """Ask each stage's probe to look its Hugging Face ids up in its cache."""
    for r in refs:
        if "hf" in r.ref and r.stage in probes:
            probes[r.stage].hub.append({"key": r.key, "kind": r.kind, "repo_id": r.ref["hf"], "config": r.config})


def _on_disk(r: Ref) -> dict[str, Any]:
    path = r.ref["path"]
    if r.kind == "dataset":
        files = data_files(path)
        return {"found": {f"file{i}": f for i, f in enumerate(files)}, "data_files": files,
                "missing": [] if files else [f"data files under {path}"]}
    if not Path(path).expanduser().exists():
        return {"found": {}, "missing": [f"{path} (does not exist)"]}
    return model_files(folder_lookup(path), weights=r.kind == "model")


def _hint(r: Ref) -> str:
    if "hf" in r.ref:
        kind = " --repo-type dataset" if r.kind == "dataset" else ""
        return (f"config key `{r.key}`; or put {r.ref['hf']} in the Hugging Face cache of the nodes "
                f"(HF_HOME): hf download{kind} {r.ref['hf']}")
    return f"config key `{r.key}`: {r.ref.get('path')}"


def reference_rows(plan: Plan, refs: list[Ref], probes: dict[str, StageProbe]) -> tuple[list[Row], Resolved]:
    rows: list[Row] = []
    resolved = Resolved({}, {})
    for r in refs:
        (kind, value), = r.ref.items()
        cell = f"{r.stage} {r.kind} {value or r.key}"
        if kind in ("pretrained", "synthetic"):
            rows.append(ok(CHECK, cell, f"made by the pipeline ({kind}{': ' + value if value else ''})"))
            continue
        by = ""
        if kind == "path":
            got: dict[str, Any] | None = _on_disk(r)
        else:
            p = probes.get(r.stage)
            if (p is None or p.result is None) and r.kind == "dataset":
                rows.append(skip(CHECK, cell, f"not looked up: the {r.stage} environment could not be probed "
                                              "(see its environment row)"))
                continue
            if p is None or p.result is None:  # the driver reads the same cache, without huggingface_hub
                got, by = cached_files(value, weights=r.kind == "model"), \
                    f" (looked up by the driver: the {r.stage} environment was not probed)"
            else:
                got = p.result["hub"].get(r.key)
        assert got is not None
        if "error" in got:
            rows.append(problem(CHECK, cell, f"cache lookup failed: {got['error']}", _hint(r)))
            continue
        if got["missing"]:
            where = "in the local Hugging Face cache" if kind == "hf" else "on disk"
            rows.append(problem(CHECK, cell, f"missing {where}: {', '.join(got['missing'])}{by}", _hint(r)))
        else:
            rows.append(ok(CHECK, cell, f"{len(got['found'])} file(s) found{by}"))
        if r.kind == "model":
            cfg_path = got["found"].get("config.json")
            resolved.model_config[r.key] = _read_json(cfg_path) if cfg_path and not got["missing"] else None
        if r.kind == "dataset":
            resolved.data_files[r.key] = got.get("data_files", []) if not got["missing"] else []
    rows += [problem(CHECK, f"path {k}", f"{p} does not exist", f"config key `{k}`")
             for k, p in _other_paths(plan) if not Path(p).expanduser().exists()]
    rows += eval_data_rows(probes)
    return rows, resolved


def _other_paths(plan: Plan) -> list[tuple[str, str]]:
    """Input paths not covered above (DeepSpeed configs, ...), from the config's list of inputs."""
    covered = ("finetune.models.", "finetune.tasks.", "quantize.models.", "data.pretrain.shards.")
    return [(k, p) for k, p in data_paths(plan.config) if not k.startswith(covered)]


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def eval_data_rows(probes: dict[str, StageProbe]) -> list[Row]:
    """One row per dataset the configured lm-eval tasks load (found by the inference probe)."""
    p = probes.get("inference")
    if p is None or p.result is None or "lm_eval_data" not in p.result:
        return []
    users: dict[str, list[str]] = {}
    for task, t in p.result["lm_eval"].get("tasks", {}).items():
        for leaf in t["leaves"]:
            if leaf["dataset_path"]:
                users.setdefault(f"{leaf['dataset_path']}|{leaf['dataset_name'] or ''}", []).append(task)
    by_repo: dict[str, dict[str, Any]] = {}
    for key, got in p.result["lm_eval_data"].items():
        repo, config = key.split("|", 1)
        e = by_repo.setdefault(repo, {"tasks": set(), "missing": [], "found": 0})
        e["tasks"].update(users.get(key, []))
        if got.get("error") or got["missing"]:
            e["missing"].append(config or "(default)")
        else:
            e["found"] += 1
    rows = []
    for repo, e in sorted(by_repo.items()):
        cell = f"eval dataset {repo}"
        tasks = ", ".join(sorted(e["tasks"]))
        if e["missing"]:
            n = len(e["missing"])
            rows.append(problem(CHECK, cell, f"not in the local Hugging Face cache ({n} config(s): "
                                             f"{', '.join(e['missing'][:4])}{' …' if n > 4 else ''}); used by {tasks}",
                                f"config key `eval.tasks` ({tasks}); or put {repo} in the cache of the nodes "
                                f"(HF_HOME): hf download --repo-type dataset {repo}"))
        else:
            rows.append(ok(CHECK, cell, f"cached ({e['found']} config(s)); used by {tasks}"))
    return rows
