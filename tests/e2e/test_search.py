"""`python -m vit_hf.run RECIPE --search`: budgeted trials through Trainer.hyperparameter_search (optuna),
a table, a plot, and a best recipe that runs as it is."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main

SEARCH_SECONDS = 20
N_TRIALS = 2
SPACE = {
    "learning_rate": {"type": "log_uniform", "low": 3.0e-4, "high": 3.0e-3},
    "data.mixup_alpha": {"type": "uniform", "low": 0.0, "high": 0.5},
    "model.hidden_size": {"type": "categorical", "choices": [16, 32]},
}


def search_recipe(tmp_path: Path, data: Path | None = None, **search) -> dict:
    recipe = tiny_recipe(data or tmp_path / "data", tmp_path / "out", lr_scheduler_type="cosine", warmup_steps=0.1)
    del recipe["training"]["num_train_epochs"]
    recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    recipe["budget"] = {"time": "6s"}  # the final run's, in best_recipe.yaml; search.time sets the trials'
    recipe["search"] = {"n_trials": N_TRIALS, "time": SEARCH_SECONDS, "prune_after": 1, "space": SPACE, **search}
    return recipe


@pytest.mark.slow
def test_a_search_ends_on_time_and_its_best_recipe_runs_as_is(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vit_hf")
    data = make_imagefolder(tmp_path / "data", per_class=12, size=20)
    recipe = write_recipe(tmp_path, search_recipe(tmp_path, data))
    started = time.monotonic()
    assert main([str(recipe), "--search"]) == 0
    assert time.monotonic() - started < SEARCH_SECONDS + 1  # the budget covers data, trials and outputs

    out = tmp_path / "out"
    with (out / "search_results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["trial"] for row in rows] == ["1", "2"]
    assert rows[0]["state"] == "complete"  # prune_after: 1
    assert {row["state"] for row in rows} <= {"complete", "pruned"}
    assert sum(float(row["seconds"]) for row in rows) < SEARCH_SECONDS
    completed = sum(row["state"] == "complete" for row in rows)
    stops = [r for r in caplog.records if r.getMessage().startswith("budget: training time spent at step")]
    assert len(stops) == completed  # every completed trial ended on its own budget
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best_row = max((row for row in rows if row["state"] == "complete"), key=lambda row: float(row["accuracy"]))
    best = yaml.safe_load((out / "best_recipe.yaml").read_text())
    assert "search" not in best
    assert best["training"]["learning_rate"] == pytest.approx(float(best_row["training.learning_rate"]))
    assert best["model"]["hidden_size"] == int(best_row["model.hidden_size"])
    assert best["training"]["output_dir"] == str(out / "best")
    assert main([str(out / "best_recipe.yaml")]) == 0
    assert (out / "best" / "eval_results.json").is_file()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learnin_rate": {"type": "uniform", "low": 0.1, "high": 0.2}}, "did you mean 'learning_rate'?"),
        ({"data.image_size": {"type": "categorical", "choices": [16, 32]}}, "data.image_size: cannot be searched"),
        ({"learning_rate": {"type": "log_uniform", "low": 0.0, "high": 0.1}}, "needs low > 0"),
        ({"model.hidden_size": {"type": "int", "low": 32}}, "takes exactly high, low, type"),
        ({"data.hflip": {"type": "uniform", "low": 0.5, "high": 1.5}}, "data.hflip: with 1.5"),
    ],
)
def test_a_bad_search_space_is_an_error_before_anything_loads(tmp_path, capsys, space, message):
    recipe = search_recipe(tmp_path)
    recipe["search"]["space"] = space
    assert main([str(write_recipe(tmp_path, recipe)), "--search"]) == 2
    assert message in capsys.readouterr().err


def test_search_needs_a_space(tmp_path, capsys):
    recipe = search_recipe(tmp_path)
    del recipe["search"]
    assert main([str(write_recipe(tmp_path, recipe)), "--search"]) == 2
    assert "no search.space" in capsys.readouterr().err
