"""A strict, line-aware YAML loader for config files.

PyYAML (and Snakemake's loader, which uses it) accepts a mapping with the same key twice and
keeps the last value silently, and its syntax errors reach the user through Snakemake without
the file or the line. This loader refuses duplicate keys, naming the file, line and column of
both occurrences, turns a syntax error into one line naming file, line and column, and records
where each mapping key is written so that a config error can point at the line to edit.

Run ``python -m effbench.config FILE...`` to check files by hand (Snakemake
rejects a broken ``--configfile`` before our Snakefile runs, without a line number).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"
Key = tuple[str, ...]
KEY_IN_MESSAGE = re.compile(r"`([A-Za-z0-9_.-]+)`")  # how a ConfigError names a config key


@dataclass
class Locations:
    """Where each dotted key (sequence indices as digits) is written: ``file:line``. Dotted,
    as messages name keys (a name may hold a dot: ``0.5b``). A later file overrides an earlier
    one, as Snakemake's merge of config files does."""

    lines: dict[str, str] = field(default_factory=dict)

    def of(self, dotted: str) -> str | None:
        """The place of a dotted key, or of its nearest written parent."""
        while dotted:
            if dotted in self.lines:
                return self.lines[dotted]
            dotted = dotted.rpartition(".")[0]
        return None

    def annotate(self, message: str) -> str:
        """Each line of a config error with the place of the first key it names in backticks."""
        out = []
        for line in message.splitlines():
            place = next((p for k in KEY_IN_MESSAGE.findall(line) if (p := self.of(k))), None)
            out.append(f"{line} [{place}]" if place else line)
        return "\n".join(out)

    def update(self, other: "Locations") -> None:
        self.lines.update(other.lines)


def _mark(name: str, mark: yaml.Mark) -> str:
    return f"{name}:{mark.line + 1}:{mark.column + 1}"


def _walk(node: yaml.Node, path: Key, name: str, out: Locations) -> None:
    """Record each mapping key's line; refuse a key written twice in one mapping."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *anchor` merges; its keys may be overridden
                continue
            key = str(key_node.value)
            here = path + (key,)
            if key in seen:
                raise ConfigError(
                    f"{_mark(name, key_node.start_mark)}: duplicate key `{'.'.join(here)}` "
                    f"(first at {_mark(name, seen[key])}); YAML would keep the last one silently"
                )
            seen[key] = key_node.start_mark
            out.lines[".".join(here)] = f"{name}:{key_node.start_mark.line + 1}"
            _walk(value_node, here, name, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.lines[".".join(path + (str(i),))] = f"{name}:{item.start_mark.line + 1}"
            _walk(item, path + (str(i),), name, out)


class YAMLSyntaxError(ConfigError):
    """A config file that is not YAML (nor JSON)."""


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if dup is not None:
        raise ConfigError(f"duplicate key `{dup}`; JSON would keep the last one silently")
    return dict(pairs)


def load_text(text: str, name: str) -> tuple[Any, Locations]:
    """The document in ``text`` (``name`` is its file, for messages) and its key locations.

    Snakemake reads a config file as JSON, else YAML; JSON that YAML cannot read (tab
    indentation) is read as JSON here too, without key locations."""
    try:
        return _load_yaml(text, name)
    except YAMLSyntaxError as yaml_error:
        try:
            return json.loads(text, object_pairs_hook=_json_pairs), Locations()
        except json.JSONDecodeError as e:
            if name.endswith(".json"):  # meant as JSON: its own position says more
                raise YAMLSyntaxError(f"{name}:{e.lineno}:{e.colno}: JSON syntax error: {e.msg}") from None
            raise yaml_error from None
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from None


def _load_yaml(text: str, name: str) -> tuple[Any, Locations]:
    loader = yaml.SafeLoader(text)
    where = Locations()
    try:
        node = loader.get_single_node()
        if node is None:
            return None, where
        _walk(node, (), name, where)
        return loader.construct_document(node), where
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = _mark(name, mark) if mark else name
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise YAMLSyntaxError(f"{at}: YAML syntax error: {what}") from None
    except yaml.YAMLError as e:  # no position known
        raise YAMLSyntaxError(f"{name}: YAML error: {e}") from None
    finally:
        loader.dispose()


def load_file(path: str | Path) -> tuple[Any, Locations]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror})") from None
    return load_text(text, str(path))


def load_files(paths: Iterable[str | Path]) -> Locations:
    """Check every config file Snakemake loaded (in its order) and merge their key locations."""
    where = Locations()
    for p in paths:
        where.update(load_file(p)[1])
    return where


def main(argv: list[str]) -> int:
    """Check config files by hand (``python -m effbench.config FILE...``); 1 if any is bad."""
    status = 0
    for p in argv:
        try:
            load_file(p)
        except ConfigError as e:
            print(e, file=sys.stderr)
            status = 1
    return status

