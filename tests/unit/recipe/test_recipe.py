"""Recipes: loading, overrides, validation errors a user can act on, every shipped recipe builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from vit_hf.errors import RecipeError
from vit_hf.metrics import METRICS
from vit_hf.recipe.load import load_recipe, parse_overrides, recipe_from_dict
from vit_hf.recipe.training_args import build_training_arguments

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def write(tmp_path: Path, recipe: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def minimal(**sections) -> dict:
    recipe = {"data": {"dataset": "some/dataset"}, "model": {"preset": "vit-tiny"}}
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    return recipe


def error_of(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(raw)
    return str(info.value)


def test_minimal_recipe_gets_image_training_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, minimal(), "my_run.yaml"))
    args = build_training_arguments(recipe.training)
    assert args.remove_unused_columns is False
    assert args.eval_strategy == "epoch"
    assert Path(args.output_dir) == Path("outputs/my_run")
    assert recipe.data.image_size is None and recipe.data.train_split == "train"


def test_unknown_key_names_it_and_suggests_the_closest(tmp_path):
    message = error_of({"data": {"datset": "x"}, "model": {}})
    assert "data.datset" in message and "'dataset'" in message


def test_unknown_section_and_training_key_are_errors():
    assert "'budget'" in error_of(minimal() | {"budgte": {"time": 5}})
    message = error_of(minimal(training={"learning_rat": 0.1}))
    assert "training.learning_rat" in message and "learning_rate" in message


def test_unknown_model_key_suggests_vit_config_field():
    message = error_of(minimal(model={"num_hidden_layer": 4}))
    assert "model.num_hidden_layer" in message and "num_hidden_layers" in message


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("data", "image_size", "big", "an integer"),
        ("data", "streaming", "yes please", "true or false"),
        ("data", "crop", "center", "'random_resized'"),
        ("training", "learning_rate", "fast", "a number"),
        ("model", "patch_size", 4.5, "an integer"),
    ],
)
def test_wrong_type_names_key_value_and_expected_type(section, key, value, expected):
    message = error_of(minimal(**{section: {key: value}}))
    assert f"{section}.{key}" in message and repr(value) in message and expected in message


def test_impossible_combinations_are_caught_before_any_data_is_loaded():
    assert "eval_strategy" in error_of(minimal(early_stopping={"patience": 2}, training={"eval_strategy": "no"}))
    assert "max_steps" in error_of(minimal(data={"streaming": True}))
    assert "data.dataset" in error_of({"model": {"preset": "vit-tiny"}})
    assert "data.crop_scale" in error_of(minimal(data={"crop_scale": [0.8, 0.2]}))


def test_training_arguments_own_errors_become_recipe_errors(tmp_path):
    raw = minimal(training={"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "steps"})
    with pytest.raises(RecipeError, match="training.load_best_model_at_end .* training.save_strategy"):
        build_training_arguments(recipe_from_dict(raw).training)


def test_budget_time_accepts_durations():
    assert recipe_from_dict(minimal(budget={"time": "90s"})).budget.time == 90
    assert recipe_from_dict(minimal(budget={"time": "1h30m"})).budget.time == 5400
    assert recipe_from_dict(minimal(budget={"time": 12})).budget.time == 12
    assert "budget.time" in error_of(minimal(budget={"time": "soon"}))


def test_overrides_both_forms_and_yaml_values(tmp_path):
    path = write(tmp_path, minimal())
    recipe = load_recipe(
        path,
        ["--data.image_size", "64", "--training.learning_rate=3e-4", "--data.classes", "[cat, dog]",
         "--model.patch_size", "8"],
    )
    assert recipe.data.image_size == 64
    assert recipe.training["learning_rate"] == 3e-4
    assert recipe.data.classes == ["cat", "dog"]
    assert recipe.vit_config == {"patch_size": 8}


def test_scalars_read_as_yaml_1_2_no_is_a_strategy_not_false(tmp_path):
    # YAML 1.1 (PyYAML's default) reads no/yes/on/off as booleans: `eval_strategy: no` would be False.
    path = tmp_path / "recipe.yaml"
    path.write_text("data: {dataset: x}\nmodel: {preset: vit-tiny}\ntraining: {eval_strategy: no, save_strategy: no,"
                    " bf16: true}\n")
    recipe = load_recipe(path, ["--training.eval_strategy", "no", "--data.streaming", "false"])
    assert recipe.training["eval_strategy"] == "no" and recipe.training["save_strategy"] == "no"
    assert recipe.training["bf16"] is True and recipe.data.streaming is False
    assert "eval_strategy: 'no'" in recipe.to_yaml()  # quoted: any YAML reader reads it back as the string


def test_overrides_are_validated_like_the_file(tmp_path):
    with pytest.raises(RecipeError, match="data.imag_size"):
        load_recipe(write(tmp_path, minimal()), ["--data.imag_size", "32"])
    with pytest.raises(RecipeError, match="no value"):
        parse_overrides(["--data.image_size"])


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(write(tmp_path, minimal(model={"patch_size": 4}, budget={"time": "2m"})))
    again = load_recipe(write(tmp_path, yaml.safe_load(recipe.to_yaml()), "again.yaml"))
    assert again.to_dict() == recipe.to_dict()


def test_hub_token_never_reaches_the_resolved_recipe():
    recipe = recipe_from_dict(minimal(training={"hub_token": "hf_secret_value"}))
    assert "hf_secret_value" not in recipe.to_yaml()


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_parses_and_builds(path, tiny_pretrained):
    """Dataset loading aside: the recipe validates, TrainingArguments build, the model builds."""
    from vit_hf.modeling.build import build_model
    from vit_hf.modeling.preprocessing import resolve_preprocessing
    from vit_hf.recipe.training_args import training_arguments

    text = path.read_text()
    assert text.startswith("#") and "Command:" in text and "Hardware:" in text and "Expected:" in text
    recipe = load_recipe(path, ["--training.bf16", "false"])  # this CPU test machine may lack bf16
    if recipe.model.pretrained:  # nothing downloads in tests: a tiny local checkpoint stands in
        recipe.model.pretrained = str(tiny_pretrained)
    training_arguments(recipe)
    prep = resolve_preprocessing(recipe)
    if recipe.budget.plan == "auto":  # the plan chooses the model: build the shape it times first
        from vit_hf.planning.candidates import candidates
        from vit_hf.recipe.load import with_values
        from vit_hf.training.plan import Candidate, planned_values

        first = Candidate(candidates(prep.image_size, recipe.model.stem == "auto")[0], 1000.0, epochs=10.0)
        recipe = with_values(recipe, {**planned_values(first, prep.image_size), "budget.plan": None})
    model = build_model(recipe.model, recipe.vit_config, [f"c{i}" for i in range(10)], prep.image_size)
    assert model.config.num_labels == 10 and model.config.image_size == prep.image_size


def test_cli_bad_recipe_is_one_message_and_exit_2(tmp_path):
    path = write(tmp_path, {"data": {"dataset": "x", "image_sise": 32}})
    result = subprocess.run([sys.executable, "-m", "vit_hf.run", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "data.image_sise" in result.stderr and "image_size" in result.stderr


def test_cli_help_lists_every_key_with_default():
    result = subprocess.run([sys.executable, "-m", "vit_hf.run", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for key in ("data.dataset", "data.crop_pct", "model.preset", "early_stopping.patience", "budget.time",
                "training.learning_rate", "training.remove_unused_columns *"):
        assert key in result.stdout
    assert "default 'random_resized'" in result.stdout


def test_evaluation_metrics_default_to_accuracy_and_top5_and_round_trip():
    recipe = recipe_from_dict(minimal())
    assert recipe.evaluation.metrics == ["accuracy", "top5_accuracy"]
    assert recipe.to_dict()["evaluation"] == {"metrics": ["accuracy", "top5_accuracy"]}


def test_a_misspelt_metric_ends_the_command_with_the_closest_and_every_known_one(tmp_path, capsys):
    from vit_hf.cli.run import main

    path = write(tmp_path, minimal(evaluation={"metrics": ["accuracy", "f1_marco"]}))
    assert main([str(path)]) == 2
    message = capsys.readouterr().err
    assert "evaluation.metrics: unknown metric 'f1_marco'; did you mean 'f1_macro'?" in message
    assert all(name in message for name in METRICS)


def test_a_hub_metric_is_named_by_its_repository_and_loaded_when_the_run_starts():
    message = error_of(minimal(evaluation={"metrics": ["accuracy", "matthews_correlation"]}))
    assert "unknown metric 'matthews_correlation'" in message and "evaluate-metric/matthews_correlation" in message
    recipe = recipe_from_dict(minimal(evaluation={"metrics": ["accuracy", "evaluate-metric/matthews_correlation"]},
                                      training={"metric_for_best_model": "matthews_correlation"}))
    assert recipe.evaluation.metrics[1] == "evaluate-metric/matthews_correlation"


def test_the_metrics_hold_accuracy_once_each_and_metric_for_best_model_names_one_of_them():
    assert "lacks 'accuracy'" in error_of(minimal(evaluation={"metrics": ["f1_macro"]}))
    assert "reported twice" in error_of(minimal(evaluation={"metrics": ["accuracy", "evaluate-metric/accuracy"]}))
    message = error_of(minimal(training={"metric_for_best_model": "f1_macro"}))  # not among the default metrics
    assert "training.metric_for_best_model: 'f1_macro' is not computed" in message and "top5_accuracy" in message
    chosen = {"metrics": ["accuracy", "f1_macro"]}
    for best in ("f1_macro", "eval_f1_macro", "loss", "accuracy"):
        recipe_from_dict(minimal(evaluation=chosen, training={"metric_for_best_model": best}))


def test_the_metrics_are_not_searchable():
    space = {"evaluation.metrics": {"type": "categorical", "choices": ["accuracy"]}}
    assert "every trial is scored the same way" in error_of(minimal(search={"space": space}))
