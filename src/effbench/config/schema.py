"""Validate a config against workflow/schemas/config.schema.yaml and fill its defaults.

The schema's ``default:`` values are the only defaults: ``validate`` returns a copy of the
config with every absent key that has one filled in (Snakemake's ``validate(...,
set_default=True)``, reimplemented so that the package does not import Snakemake). A default
is filled where the schema states it; keys merged in layers (model keys, fine-tuning training
keys) have theirs on the base layer only (``model_defaults``, ``finetune.training``), so a
filled default never overrides a value set on a lower layer.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import yaml

from ..provenance import REPO_ROOT
from .errors import ConfigError

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


@lru_cache(maxsize=1)
def _validator_class() -> Any:
    import jsonschema  # the driver's library; stage environments only import the constants

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def fill_then_check(validator: Any, properties: dict[str, Any], instance: Any, sub: dict[str, Any]) -> Any:
        if validator.is_type(instance, "object"):
            for name, prop in properties.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from check_properties(validator, properties, instance, sub)

    return jsonschema.validators.extend(base, {"properties": fill_then_check})


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """The config with its defaults filled (a copy); ConfigError naming every bad key."""
    import jsonschema

    filled = copy.deepcopy(config)
    validator = _validator_class()(schema())
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:20]:
            # Report the innermost cause of a oneOf/anyOf so the message is specific.
            best = jsonschema.exceptions.best_match([e])
            lines.append(f"config key `{_key(best.absolute_path)}`: {best.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return filled


def defaults_of(*section: str) -> dict[str, Any]:
    """The defaults of an absent section (e.g. ``defaults_of("inference")``): what its keys
    resolve to when the config does not have it."""
    sub = schema()
    for name in section:
        sub = sub["properties"][name]
    instance: dict[str, Any] = {}
    validator = _validator_class()(schema())
    for _ in validator.evolve(schema=sub).iter_errors(instance):
        pass  # an empty section misses its required keys; only the filled defaults matter
    return instance
