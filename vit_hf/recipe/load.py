"""Reading a recipe: a YAML file plus `--section.key value` overrides -> a validated Recipe.

Unknown keys at any level are errors that suggest the closest valid key; wrong types name the key, the
value and the expected type; overrides are merged before validation, so they get the same checks.
Nothing is loaded but the YAML: no data, no model.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError
from .durations import parse_duration
from .keys import full_key, set_dotted
from .schema import SECTIONS, TOP_LEVEL_KEYS, ModelConfig, Recipe, vit_config_keys
from .search_space import check_search_space
from .training_args import training_section
from .validate import check_combinations, check_keys, check_type

# Keys that take durations: '90s', '45m', '24h', or seconds.
DURATION_KEYS = ("budget.time", "budget.save_every", "search.time")


class RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no tags that build objects) that reads scalars as YAML 1.2 does.

    PyYAML follows YAML 1.1, where a float needs a dot ('3.0e-4'), so learning_rate: 3e-4 would be a
    string and an error; and where yes/no/on/off are booleans, so `eval_strategy: no` (or
    `--training.eval_strategy no`) would be False, not the strategy "no". YAML 1.2: floats with or
    without a dot, and only true/false as booleans.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read, merge the `--section.key value` overrides, validate; raises RecipeError."""
    raw = read_yaml(path)
    for dotted, value in parse_overrides(overrides or []):
        set_dotted(raw, dotted, value)
    return recipe_from_dict(raw, source=str(path))


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist; pass the path of a YAML recipe, e.g. "
                          "recipes/cifar10_tiny.yaml")
    try:
        # safe_load: a recipe is data; tags like !!python/object must never construct objects.
        raw = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe file {str(path)!r} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe file {str(path)!r} must be a mapping with sections "
                          f"{sorted(SECTIONS) + ['training']} and resume")
    return raw


def parse_overrides(argv: list[str]) -> list[tuple[str, Any]]:
    """`--data.image_size 64` and `--data.image_size=64` -> [("data.image_size", 64)]; values are YAML scalars."""
    pairs, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0][2:]
        if not arg.startswith("--") or ("." not in name and name not in TOP_LEVEL_KEYS):
            raise RecipeError(
                f"unexpected argument {arg!r}; overrides look like --section.key value, --section.key=value "
                "or --resume value"
            )
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise RecipeError(f"override {arg!r} has no value; write {arg} VALUE")
            key, text = arg[2:], argv[i + 1]
            i += 2
        pairs.append((key, _yaml_scalar(key, text)))
    return pairs


def _yaml_scalar(key: str, text: str) -> Any:
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        raise RecipeError(f"--{key}: {text!r} is not a YAML value") from None


def recipe_from_dict(raw: dict[str, Any], source: str | None = None) -> Recipe:
    """The Recipe `raw` describes (a recipe file's mapping), checked; RecipeError names what is wrong."""
    check_keys("", raw, list(SECTIONS) + ["training", *TOP_LEVEL_KEYS])
    vit_config = _vit_config(raw)
    sections = {name: _build_section(name, cls, _section(raw, name)) for name, cls in SECTIONS.items()}
    training = training_section(_section(raw, "training"))
    training["output_dir"] = training.get("output_dir") or default_output_dir(source)
    recipe = Recipe(**sections, training=training, vit_config=vit_config,
                    resume=check_type("resume", raw.get("resume", "auto"), str), source=source)
    check_combinations(recipe)
    if recipe.search.space:
        check_search_space(raw, recipe_from_dict)
    return recipe


def with_values(recipe: Recipe, values: dict[str, Any]) -> Recipe:
    """A copy of `recipe` with dotted keys set (a bare key is a training key), checked as a loaded recipe is."""
    raw = copy.deepcopy(recipe.to_dict())
    for key, value in values.items():
        set_dotted(raw, full_key(key), value)
    return recipe_from_dict(raw, source=recipe.source)


def default_output_dir(source: str | None) -> str:
    """outputs/<recipe file's stem> when the recipe names no training.output_dir."""
    return str(Path("outputs") / (Path(source).stem if source else "run"))


def _vit_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The ViTConfig fields set under `model:` (beside vit_hf's own model keys), type-checked."""
    fields = vit_config_keys()
    values = _section(raw, "model")
    return {key: check_type(f"model.{key}", value, fields[key]) for key, value in values.items() if key in fields}


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    values = raw.get(name) or {}
    if not isinstance(values, dict):
        raise RecipeError(f"{name}: must be a mapping of keys to values, got {values!r}")
    return dict(values)


def _build_section(name: str, cls: type, values: dict[str, Any]):
    valid = {f.name: f for f in dataclasses.fields(cls)}
    if cls is ModelConfig:  # ViTConfig fields sit beside the section's own keys (see _vit_config)
        values = {key: value for key, value in values.items() if key not in vit_config_keys()}
        check_keys(name, values, list(valid) + list(vit_config_keys()))
    check_keys(name, values, list(valid))
    hints = typing.get_type_hints(cls)
    converted = {}
    for key, value in values.items():
        if f"{name}.{key}" in DURATION_KEYS and value not in (None, "auto"):
            value = _duration(f"{name}.{key}", value)
        converted[key] = check_type(f"{name}.{key}", value, hints[key])
    return cls(**converted)


def _duration(key: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise RecipeError(f"{key}: {exc}") from None
