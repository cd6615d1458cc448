"""Validate a config against workflow/schemas/config.schema.yaml and fill its defaults.

The schema's ``default:`` values are the only defaults: ``validate`` returns a copy of the
config with every absent key that has one filled in, as Snakemake's ``validate(...,
set_default=True)`` does. The filling is this module's own walk of the schema rather than a
jsonschema validator extension: the pretraining environment, where tests resolve cells from a
config, has no jsonschema (the driver validates; every environment can fill). A default is
filled where the schema states it; keys merged in layers (model keys, fine-tuning training
keys) have theirs on the base layer only (``model_defaults``, ``finetune.training``), so a
filled default never overrides a value set on a lower layer.
"""

from __future__ import annotations

import copy
import math
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


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def non_finite(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Key paths of every NaN or infinite number in a config, at any depth (YAML's ``.nan`` and
    ``.inf``): NaN passes every comparison a schema can make (``nan > 0`` and ``nan < 1`` are
    both false, so neither minimum nor maximum refuses it)."""
    if isinstance(node, float):
        return [] if math.isfinite(node) else [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in non_finite(v, path + (k,))]
    if isinstance(node, (list, tuple)):
        return [p for i, v in enumerate(node) for p in non_finite(v, path + (i,))]
    return []


def _validator() -> Any:
    """Draft 2020-12, except that ``integer`` is an int: the draft counts 2.0 as an integer (a
    number with a zero fraction), so ``num_layers: 2.0`` would pass and reach the stages as a float."""
    import jsonschema  # the driver's library

    base = jsonschema.Draft202012Validator
    strict = base.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    return jsonschema.validators.extend(base, type_checker=strict)(schema())


def check(config: dict[str, Any]) -> None:
    """ConfigError naming every key that breaks the schema, and every NaN or infinite number."""
    import jsonschema

    bad = non_finite(config)
    if bad:
        lines = [f"config key `{_key(p)}`: {_at(config, p)} is not a finite number" for p in bad]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    errors = sorted(_validator().iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:20]:
            # Report the innermost cause of a oneOf/anyOf so the message is specific.
            best = jsonschema.exceptions.best_match([e])
            lines += [f"config key `{_key(path)}`: {message}" for path, message in _named(best)]
        # One error per missing key names them all: say each once.
        raise ConfigError("invalid config:\n  " + "\n  ".join(dict.fromkeys(lines)))


def _at(config: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        config = config[k]
    return config


def _named(e: Any) -> list[tuple[list[Any], str]]:
    """(key path, message) of an error; an unknown or a missing key is named itself rather
    than its parent mapping, so that the message points at the key to edit."""
    path = list(e.absolute_path)
    parent = f"config key `{_key(path)}`"
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        known = set(e.schema.get("properties", {}))
        extra = [k for k in e.instance if k not in known]
        return [(path + [k], f"unknown key {k!r} in {parent}; allowed there: {', '.join(sorted(known))}")
                for k in extra]
    if e.validator == "required" and isinstance(e.instance, dict):
        missing = [k for k in e.validator_value if k not in e.instance]
        return [(path + [k], f"required key {k!r} is missing from {parent}") for k in missing]
    if isinstance(e.instance, float) and e.instance.is_integer() and _wants_integer(e.schema):
        return [(path, f"{e.instance} is not of type 'integer' (a float where an integer is meant: "
                       f"write {int(e.instance)})")]
    if e.validator == "dependentRequired" and isinstance(e.instance, dict):
        return [(path + [d], f"required key {d!r} is missing (needed by {k!r})")
                for k, deps in e.validator_value.items() if k in e.instance for d in deps if d not in e.instance]
    return [(path, e.message)]


def _wants_integer(sub: Any) -> bool:
    """Whether a schema (a oneOf's branches, a $ref's target) allows integers of some kind."""
    if not isinstance(sub, dict):
        return False
    if sub.get("type") == "integer" or ("$ref" in sub and _wants_integer(_resolve(sub["$ref"]))):
        return True
    return any(_wants_integer(b) for k in ("oneOf", "anyOf") for b in sub.get(k, []))


def _holds(condition: dict[str, Any], instance: dict[str, Any]) -> bool:
    """An ``if:`` of the kinds the schema uses: required keys, and keys with a const value."""
    if set(condition) - {"required", "properties"}:
        raise ValueError(f"schema `if` {condition} is not one fill_defaults evaluates")
    consts = {k: p["const"] for k, p in condition.get("properties", {}).items()}
    return all(k in instance for k in condition.get("required", [])) and \
        all(instance.get(k) == v for k, v in consts.items())


def fill_defaults(instance: Any, sub: dict[str, Any]) -> None:
    """Set, in place, every default ``sub`` states for a key ``instance`` lacks, at every depth
    (``properties``, ``additionalProperties``, ``$ref``, ``allOf``, ``if``/``then``; there are
    no defaults under ``oneOf``/``anyOf``, whose branch is not known without validating)."""
    if not isinstance(instance, dict):
        return
    if "$ref" in sub:
        fill_defaults(instance, _resolve(sub["$ref"]))
    props = sub.get("properties", {})
    for name, prop in props.items():
        if name not in instance and "default" in prop:
            instance[name] = copy.deepcopy(prop["default"])
        if name in instance:
            fill_defaults(instance[name], prop)
    extra = sub.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in props:
                fill_defaults(value, extra)
    for part in sub.get("allOf", []):
        fill_defaults(instance, part)
    if "if" in sub and "then" in sub and _holds(sub["if"], instance):
        fill_defaults(instance, sub["then"])


def _resolve(ref: str) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"schema $ref {ref!r} is not a local $defs entry")
    return schema()["$defs"][ref[len(prefix):]]


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """The config with its defaults filled (a copy); ConfigError naming every bad key."""
    check(config)
    return with_defaults(config)


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config with the schema's defaults filled, without validating it (the
    stage environments have no jsonschema)."""
    filled = copy.deepcopy(config)
    fill_defaults(filled, schema())
    return filled


def defaults_of(*section: str) -> dict[str, Any]:
    """The defaults of an absent section (e.g. ``defaults_of("inference")``): what its keys
    resolve to when the config does not have it."""
    sub = schema()
    for name in section:
        sub = sub["properties"][name]
    instance: dict[str, Any] = {}
    fill_defaults(instance, sub)
    return instance
