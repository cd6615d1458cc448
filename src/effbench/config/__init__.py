"""Load, validate and expand the pipeline config into cells; one module per job:

- ``schema``: validation against workflow/schemas/config.schema.yaml, and its defaults;
- ``pretrain``, ``finetune``, ``serving``: the three grids and each cell's resolved settings;
- ``model_ref``: the one resolver of a model reference (pretrained / hf / path);
- ``hub_cache``: the local Hugging Face cache read with the standard library (offline, every
  id a cell loads must be there: ``plan.check_cached``);
- ``launch``: launch commands (torchrun, srun) and scheduler resources;
- ``paths``: input paths outside the pipeline; ``environments``: each stage's interpreter;
- ``plan``: all of it at once, what the Snakefile loads;
- ``yaml_strict``: the config files re-read strictly (duplicate keys, syntax errors with their
  line) and where each key is written, so errors name the file and line.

The Snakefile calls ``plan`` once when the DAG is built, so a bad value stops the run before
any job starts, with a message that names the key. Each cell's resolved settings are what the
rules pass through ``params:``: a changed value reruns exactly the cells whose resolved settings
it changes.
"""

from __future__ import annotations

from typing import Any

from .environments import ENVS_DIR, STAGES, env_digest, env_files, stage_python, with_package
from .errors import ConfigError
from .finetune import FinetuneCell, deepspeed_config, finetune_gpus, finetune_layout
from .launch import ONE_GPU, gpu_resources, launch_command, step_cpus
from .merge import deep_merge
from .model_ref import ModelSource, resolve_model_ref
from .paths import data_paths, missing_paths
from .loaded import Plan, config_hash, plan
from .pretrain import PretrainCell, parallel_layout, resolve_model
from .pretrain import pretrain_settings as _pretrain_settings
from .schema import SCHEMA_PATH, defaults_of, validate, with_defaults
from .serving import LOCAL_TASKS, WEIGHT_BITS, ServeCell, ServeCells, needs_calibration
from .yaml_strict import Locations, load_files


def pretrain_settings(config: dict[str, Any], size: str, technique: str) -> dict[str, Any]:
    """One pretraining cell's settings from a config as written, with the schema's defaults
    (not validated: the pretraining environment, whose tests call this, has no jsonschema)."""
    return _pretrain_settings(with_defaults(config), size, technique)


__all__ = [
    "ENVS_DIR", "LOCAL_TASKS", "ONE_GPU", "SCHEMA_PATH", "STAGES", "WEIGHT_BITS",
    "ConfigError", "FinetuneCell", "Locations", "ModelSource", "Plan", "PretrainCell", "ServeCell", "ServeCells",
    "config_hash", "data_paths", "deep_merge", "deepspeed_config", "defaults_of", "env_digest", "env_files", "finetune_gpus",
    "finetune_layout", "gpu_resources", "launch_command",
    "load_files", "missing_paths", "needs_calibration", "parallel_layout", "plan", "pretrain_settings", "resolve_model", "resolve_model_ref",
    "stage_python", "step_cpus", "validate", "with_defaults", "with_package",
]
