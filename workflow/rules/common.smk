# Validate the config once, when the DAG is built: a bad value stops the run before any job.
import json
import re
import shlex

try:
    PRETRAIN_CELLS, EXPORT_CELLS = cfg.load_config(config)
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


# Light steps (aggregation) run with the driver's own interpreter: no torch there.
DRIVER_PYTHON = f"PYTHONPATH={shlex.quote(str(SRC))} {shlex.quote(sys.executable)}"


def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names))


wildcard_constraints:
    size=_alternation(config["pretrain"]["sizes"]),
    technique=_alternation(config["pretrain"]["techniques"]),
    model=_alternation((config.get("quantize") or {}).get("models", {}) or ["-"]),
    precision=_alternation((config.get("quantize") or {}).get("precisions", []) or ["-"]),
