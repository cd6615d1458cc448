"""Shared by the config tests: a deep copy of a config with one key set or deleted."""

from __future__ import annotations

import copy
from typing import Any

DELETE = object()  # pass as the value to delete the key


def edited(base: dict, path: tuple | list, value: Any) -> dict:
    c = copy.deepcopy(base)
    node = c
    for k in path[:-1]:
        node = node[k]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return c
