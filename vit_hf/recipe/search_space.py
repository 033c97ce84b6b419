"""The recipe's `search.space`: which keys a search varies, and over what.

    search:
      space:
        learning_rate: {type: log_uniform, low: 1.0e-4, high: 3.0e-3}   # a bare key is a training key
        data.mixup_alpha: {type: uniform, low: 0.0, high: 0.8}
        model.hidden_size: {type: categorical, choices: [128, 192]}
        training.warmup_steps: {type: int, low: 0, high: 200}

Each dimension is checked at load time like any recipe key: the recipe is validated with the
dimension at each end of its range (or with each choice), so a misspelt key gets the usual
"did you mean" and a value the key cannot take is named before anything is loaded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import RecipeError
from .keys import full_key, set_dotted
from .schema import augment_keys

KINDS = ("log_uniform", "uniform", "int", "categorical")

# Keys no trial may change, and why.
FIXED_KEYS = {
    "training.output_dir": "the search writes its results there",
    "model.pretrained": "its image size and normalization shape the data all trials share",
    "resume": "trials start from scratch",
}
FIXED_SECTIONS = {"budget": "search.time sets each trial's budget", "search": "it is the search itself",
                  "evaluation": "every trial is scored the same way"}


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted recipe key: training.learning_rate
    kind: str  # one of KINDS
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        """The trial's value (optuna returns the same value when a trial asks twice)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log_uniform")

    def extremes(self) -> list[Any]:
        """The values that validating the range needs: both ends, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


def parse_space(space: dict[str, Any]) -> list[Dimension]:
    """search.space as Dimensions, each spec checked for its shape; RecipeError names the bad one."""
    return [_dimension(full_key(str(key)), spec) for key, spec in space.items()]


def check_search_space(raw: dict[str, Any], recipe_from_dict: Callable[[dict], Any]) -> None:
    """RecipeError unless every dimension names a key a trial may change, with values that key accepts:
    `recipe_from_dict` (load.py's) checks the recipe with each dimension at each end of its range."""
    base = {name: copy.deepcopy(value) for name, value in raw.items() if name != "search"}
    for dim in parse_space(raw["search"]["space"]):
        _check_searchable(dim.key)
        for value in dim.extremes():
            trial = copy.deepcopy(base)
            set_dotted(trial, dim.key, value)
            try:
                recipe_from_dict(trial)
            except RecipeError as exc:
                raise RecipeError(f"search.space.{dim.key}: with {value!r}: {exc}") from None


def _dimension(key: str, spec: Any) -> Dimension:
    where = f"search.space.{key}"
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise RecipeError(f"{where}: {spec!r} needs a type, one of {', '.join(KINDS)}, e.g. "
                          "{type: log_uniform, low: 1.0e-4, high: 3.0e-3} or {type: categorical, choices: [a, b]}")
    kind = spec["type"]
    expected = {"type", "choices"} if kind == "categorical" else {"type", "low", "high"}
    if set(spec) != expected:
        raise RecipeError(f"{where}: a {kind} dimension takes exactly {', '.join(sorted(expected))}; "
                          f"got {sorted(spec)}")
    if kind == "categorical":
        return _categorical(where, key, spec["choices"])
    return _range(where, key, kind, spec["low"], spec["high"])


def _categorical(where: str, key: str, choices: Any) -> Dimension:
    # optuna stores choices as they are and compares them: only scalars.
    scalar = (bool, int, float, str, type(None))
    if not isinstance(choices, list) or not choices or not all(isinstance(c, scalar) for c in choices):
        raise RecipeError(f"{where}: choices must be a non-empty list of numbers, strings, booleans or null; "
                          f"got {choices!r}")
    return Dimension(key, "categorical", choices=tuple(choices))


def _range(where: str, key: str, kind: str, low: Any, high: Any) -> Dimension:
    number = (int,) if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        what = "integers" if kind == "int" else "numbers"
        raise RecipeError(f"{where}: low and high must be {what} with low < high; got low={low!r}, high={high!r}")
    if kind == "log_uniform" and low <= 0:
        raise RecipeError(f"{where}: a log_uniform range needs low > 0; got {low!r}")
    return Dimension(key, kind, low=low, high=high)


def _check_searchable(key: str) -> None:
    section, _, name = key.partition(".")
    why = FIXED_KEYS.get(key) or FIXED_SECTIONS.get(section)
    if section == "data" and name not in augment_keys():
        why = f"the trials share the decoded data; searchable data keys: {', '.join(augment_keys())}"
    if why:
        raise RecipeError(f"search.space.{key}: cannot be searched ({why})")
