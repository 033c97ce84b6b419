"""A planned run that resumes keeps the plan its first process wrote: timing the shapes again could choose a
shape the checkpoint's weights do not fit."""

from __future__ import annotations

import types

from tests.helpers.recipes import tiny_recipe
from vit_hf.recipe.load import recipe_from_dict, with_values
from vit_hf.training.train import resumed_plan


def _auto(tmp_path):
    raw = tiny_recipe(tmp_path, tmp_path / "out")
    raw["budget"] = {"time": "2m", "plan": "auto"}
    return recipe_from_dict(raw)


def test_a_resumed_planned_run_continues_with_the_plan_in_its_output_dir(tmp_path):
    recipe = _auto(tmp_path)
    planned = with_values(recipe, {"model.hidden_size": 48, "budget.plan": None})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "recipe.yaml").write_text(planned.to_yaml())
    args = types.SimpleNamespace(output_dir=str(tmp_path / "out"))
    resumed = resumed_plan(recipe, str(tmp_path / "out" / "checkpoint-10"), args)
    assert resumed.budget.plan is None and resumed.vit_config["hidden_size"] == 48


def test_a_fresh_planned_run_plans_again(tmp_path):
    recipe = _auto(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "recipe.yaml").write_text(with_values(recipe, {"budget.plan": None}).to_yaml())
    args = types.SimpleNamespace(output_dir=str(tmp_path / "out"))
    assert resumed_plan(recipe, None, args).budget.plan == "auto"  # no checkpoint: nothing to keep
