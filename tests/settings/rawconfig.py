"""Raw config trees as the settings properties walk them: every path, and a value put at one."""

from __future__ import annotations

from typing import Any


def known_paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key and list index of a raw config, parents before children."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += known_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += known_paths(value, (*prefix, index))
    return paths


def inject(raw: dict[str, Any], loc: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """raw with value put at loc (in place), returned."""
    node: Any = raw
    for step in loc[:-1]:
        node = node[step]
    node[loc[-1]] = value
    return raw
