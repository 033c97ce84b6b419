"""Dotted recipe keys (`data.image_size`, `training.learning_rate`): how command-line overrides and search
dimensions name a value inside a recipe."""

from __future__ import annotations

from typing import Any

from ..errors import RecipeError


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for name in parents:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--{dotted}: {name!r} is not a section")
        node = child
    node[last] = value


def full_key(key: str) -> str:
    """`learning_rate` -> `training.learning_rate`: a bare key is a training key (the search space's shorthand)."""
    return key if "." in key or key == "resume" else f"training.{key}"
