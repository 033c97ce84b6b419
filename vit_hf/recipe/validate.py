"""Checks of a recipe's values: types, unknown keys ("did you mean"), and combinations across sections.

Each section's own constraints sit beside its fields (schema.py) and run when the section is built;
what no single field can check is here. Pure: no file, no torch, no network.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from ..errors import RecipeError
from ..metrics import METRICS, REQUIRED_METRIC, is_hub_metric, result_key
from .schema import BUDGET_SCHEDULES, PRESETS, ModelConfig, Recipe


def check_keys(section: str, values: dict[str, Any], valid: list[str]) -> None:
    """RecipeError at the first key of `values` that is not in `valid`, with the closest valid key."""
    for key in values:
        if key not in valid:
            where = f"{section}.{key}" if section else key
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
            kind = "section" if not section else "key"
            raise RecipeError(f"unknown {kind} {where!r}{hint}")


def check_type(key: str, value: Any, expected) -> Any:
    """`value` if it is of the annotated type (ints pass as floats); else RecipeError naming all three."""
    if _matches(value, expected):
        if expected is float and isinstance(value, int):
            return float(value)
        return value
    raise RecipeError(f"{key}: {value!r} is not {describe(expected)}")


def _matches(value: Any, expected) -> bool:
    origin = typing.get_origin(expected)
    if expected is typing.Any:
        return True
    if expected is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if origin in (list, tuple):
        (item,) = typing.get_args(expected)[:1] or (typing.Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def describe(expected) -> str:
    """A type as the error messages and --help say it: "an integer", "one of 'a', 'b'", ..."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(expected))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(expected))
    if origin in (list, tuple):
        return f"a list of {describe(typing.get_args(expected)[0])}"
    if expected is type(None):
        return "null"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
    return names.get(expected, getattr(expected, "__name__", str(expected)))


def check_combinations(recipe: Recipe) -> None:
    """What no single key can check: required keys, and keys that only make sense together."""
    data, model, training = recipe.data, recipe.model, recipe.training
    if not data.dataset:
        raise RecipeError("data.dataset is required: a Hub dataset id (uoft-cs/cifar10) or a local folder")
    if not model.preset and not model.pretrained:
        raise RecipeError("model: set model.preset (vit-tiny, vit-small, vit-base) or model.pretrained "
                          "(Hub id or path)")
    _check_model_options(model, recipe.vit_config)
    _check_metrics(recipe.evaluation.metrics)
    _check_metric_for_best_model(training.get("metric_for_best_model"), recipe.evaluation.metrics)
    _check_best_model_checkpoints(training)
    if recipe.early_stopping.patience is not None and str(training.get("eval_strategy", "no")) == "no":
        raise RecipeError("early_stopping.patience needs evaluations: set training.eval_strategy to 'epoch' or "
                          "'steps'")
    schedule = str(training.get("lr_scheduler_type", "linear"))
    if recipe.budget.time is not None and schedule not in BUDGET_SCHEDULES:
        raise RecipeError(f"training.lr_scheduler_type: {schedule!r} cannot follow a time budget; use one of "
                          f"{', '.join(BUDGET_SCHEDULES)}")
    if data.gpu_decode and not (data.streaming or data.loader == "decode"):
        raise RecipeError(
            f"data.gpu_decode decodes streams and data.loader: decode on the GPU, but data.loader is {data.loader!r} "
            "on a map-style dataset: its cache is decoded once, on the CPU. Set data.streaming: true or "
            "data.loader: decode, or data.gpu_decode: false"
        )
    _check_plan(recipe)
    if data.streaming and int(training.get("max_steps", -1) or -1) <= 0 and recipe.budget.time is None:
        raise RecipeError(
            "data.streaming: a stream has no length, so the run needs a limit: set training.max_steps or budget.time"
        )


def _check_plan(recipe: Recipe) -> None:
    """budget.plan: auto sizes a from-scratch run for its time; model.stem: auto is its choice to make."""
    plan, model = recipe.budget.plan, recipe.model
    if plan is None:
        if model.stem == "auto":
            raise RecipeError("model.stem: 'auto' lets the budget planner choose the stem: set budget.plan: auto, "
                              "or model.stem: patch or conv")
        return
    if recipe.budget.time is None:
        raise RecipeError("budget.plan: auto sizes the run for its time: set budget.time ('2m', '1h')")
    if model.pretrained:
        raise RecipeError("budget.plan: auto chooses a model to train from scratch; model.pretrained fixes it. "
                          "Drop one of them")
    if recipe.data.streaming:
        raise RecipeError("budget.plan: auto needs the train split's size (epochs decide the plan); a stream has "
                          "none: set data.streaming: false")
    if recipe.search.space:
        raise RecipeError("budget.plan: auto and search both choose the recipe's values; use one of them")


def _check_metrics(metrics: list[str]) -> None:
    """evaluation.metrics: each one vit_hf's or a Hub repository's (owner/name), accuracy among them, none twice."""
    for name in metrics:
        if name not in METRICS and not is_hub_metric(name):
            close = difflib.get_close_matches(name, list(METRICS), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            example = "matthews_correlation" if close else name
            raise RecipeError(
                f"evaluation.metrics: unknown metric {name!r}; {hint}vit_hf's metrics: {', '.join(METRICS)}; a metric "
                f"from the Hub is named by its repository, owner/name (e.g. evaluate-metric/{example})"
            )
    keys = [result_key(name) for name in metrics]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise RecipeError(f"evaluation.metrics: {', '.join(twice)} would be reported twice (as eval_{twice[0]}); "
                          "list each metric once")
    if REQUIRED_METRIC not in metrics:
        raise RecipeError(f"evaluation.metrics: {metrics!r} lacks {REQUIRED_METRIC!r}; add it: the summary, the "
                          f"report, the model card and --search rank runs by eval_{REQUIRED_METRIC}")


def _check_metric_for_best_model(best: str | None, metrics: list[str]) -> None:
    """The Trainer ranks evaluations by metrics[eval_<metric_for_best_model>]: it must be one that is computed."""
    keys = ["loss", *(result_key(name) for name in metrics)]
    if best is not None and best.removeprefix("eval_") not in keys:
        raise RecipeError(f"training.metric_for_best_model: {best!r} is not computed; name one of {', '.join(keys)} "
                          "(evaluation.metrics lists the metrics)")


def _check_best_model_checkpoints(training: dict[str, Any]) -> None:
    """load_best_model_at_end reloads the checkpoint of the best evaluation: there must be one at each evaluation."""
    if not training.get("load_best_model_at_end"):
        return
    evaluate, save = str(training.get("eval_strategy", "no")), str(training.get("save_strategy", "steps"))
    if save != "best" and evaluate != save:
        raise RecipeError(
            f"training.load_best_model_at_end needs a checkpoint at each evaluation, but training.save_strategy is "
            f"{save!r} and training.eval_strategy is {evaluate!r}; set both to 'epoch', or both to 'steps' with "
            "training.save_steps a multiple of training.eval_steps"
        )


def _check_model_options(model: ModelConfig, vit_config: dict[str, Any]) -> None:
    """The `model:` options a recipe alone can check; modeling.build.check_matches_checkpoint checks them
    against a pretrained checkpoint, once its config is read."""
    if model.pretrained:
        return
    fields = PRESETS[model.preset] | vit_config
    patch_size = fields.get("patch_size", 16)  # ViTConfig's default
    if model.stem == "conv" and (patch_size < 4 or patch_size & (patch_size - 1)):
        raise RecipeError(
            f"model.stem: 'conv' needs model.patch_size a power of 2 >= 4 (one stride-2 conv per factor 2), "
            f"got {patch_size}; use 4 (32 px images), 8 or 16"
        )
    if model.posemb == "sincos2d" and (fields["hidden_size"] % 4 or fields["hidden_size"] < 8):
        raise RecipeError(
            f"model.posemb: 'sincos2d' splits hidden_size into 4 sin/cos quarters; hidden_size "
            f"{fields['hidden_size']} is not a multiple of 4 (>= 8)"
        )
