# Validate the config once, when the DAG is built: a bad value stops the run before any job.
import json
import re
import shlex

try:
    PRETRAIN_CELLS, EXPORT_CELLS, FINETUNE_CELLS = cfg.load_config(config)
except cfg.ConfigError as e:
    raise WorkflowError(str(e)) from None

SERVE = cfg.serve_cells(config)  # quantize / eval / inference cells (empty without a quantize section)

RESULTS = Path(config["results"])
LOGS = RESULTS / "logs"
BENCH = RESULTS / "benchmarks"
SCRIPTS = REPO / "scripts"
SRC = REPO / "src"
CONFIG_HASH = cfg.config_hash(config)
PRETRAIN = {(c.size, c.technique): c for c in PRETRAIN_CELLS}
FINETUNE = {(c.model, c.task, c.method): c for c in FINETUNE_CELLS}
FT_CONFIG = config.get("finetune") or {"models": {}, "methods": {}, "tasks": {}}

_missing = cfg.missing_paths(config)
if _missing:
    # Plan on a laptop, run on the cluster: a dry run lists the whole DAG and names what is
    # absent here; a real run stops in onstart (which dry runs skip), before any job starts.
    _lines = "\n".join(f"  config key `{k}`: {p}" for k, p in _missing)
    logger.warning(f"These input paths do not exist on this machine:\n{_lines}")

    onstart:
        raise WorkflowError(f"Input paths do not exist:\n{_lines}")


def stage_shell(stage):
    """The interpreter (and import path) a stage's script runs with."""
    python = cfg.stage_python(config, stage)
    return f"PYTHONPATH={shlex.quote(str(SRC))} {shlex.quote(python)}"


def stage_launch(stage, layout):
    """A params function: the stage's launcher for a parallel layout (the interpreter for one
    process, torchrun on one node, srun + torchrun across nodes, sized from the job's resources)."""

    def launch(wildcards, threads, resources):
        gpus = "gpu" in resources.keys() or "gres" in resources.keys()
        cpus = resources.get("cpus_per_gpu", threads) * layout["gpus_per_node"] if gpus else threads
        python = cfg.stage_python(config, stage)
        return f"PYTHONPATH={shlex.quote(str(SRC))} {cfg.launch_command(python, layout, cpus, gpus)}"

    return launch


def stage_env(stage):
    """A stage's environment files (lock + conda file), listed as a rule's inputs: editing one
    re-runs the jobs that use the stage."""
    return [str(p) for p in cfg.env_files(stage)]


PRETRAIN_LAYOUT = cfg.parallel_layout(config)


def gpu_resources(layout):
    """What a GPU job asks the scheduler for, from the config's parallel layout (the layout is
    part of the experiment; the profile keeps the site's CPUs per GPU, memory, time, partition).
    Single node: `gpu` (sbatch --gpus). Several nodes: one task per node, `gres` per node."""
    if config["device"] == "cpu":
        return {}
    nodes, per_node = layout["nodes"], layout["gpus_per_node"]
    if nodes == 1:
        return {"gpu": per_node}
    # mpi: the job step runs our command in the batch script, and our srun places one
    # torchrun per node; tasks_per_gpu=0 keeps the plugin from adding --ntasks-per-gpu.
    return {"nodes": nodes, "gres": f"gpu:{per_node}", "mpi": "torchrun", "tasks": nodes, "tasks_per_gpu": 0}


# Light steps (aggregation) run with the driver's own interpreter: no torch there.
DRIVER_PYTHON = f"PYTHONPATH={shlex.quote(str(SRC))} {shlex.quote(sys.executable)}"


def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names))


wildcard_constraints:
    size=_alternation(config["pretrain"]["sizes"]),
    technique=_alternation(config["pretrain"]["techniques"]),
    # `model` names fine-tuning and serving models alike (both are config names).
    model=_alternation(set(FT_CONFIG["models"]) | set((config.get("quantize") or {}).get("models", {}))) or "(?!)",
    method=_alternation(FT_CONFIG["methods"]) or "(?!)",
    task=_alternation(FT_CONFIG["tasks"]) or "(?!)",
    precision=_alternation((config.get("quantize") or {}).get("precisions", []) or ["-"]),
