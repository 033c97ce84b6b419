"""budget.plan: auto through the real CLI: shapes timed and the plan logged up front, the planned recipe
written with the plan off, the run inside its budget with the learning rate annealed, and the planned
recipe repeating the same model without the probe."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.datagen import make_imagefolder
from vit_hf.cli.run import main
from vit_hf.planning.candidates import BY_NAME

BUDGET = 20  # seconds: the probe takes at least 3 of them


def cli(*args: str, timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "vit_hf.run", *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=timeout)
    return result, time.monotonic() - started


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planned")
    data = make_imagefolder(tmp / "data", per_class=8, size=32)
    out = tmp / "out"
    result, elapsed = cli("recipes/cifar10_auto.yaml", "--data.dataset", str(data), "--training.output_dir", str(out),
                          "--budget.time", f"{BUDGET}s", "--training.logging_steps", "1", "--resume", "never")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"data": data, "out": out, "log": result.stderr + result.stdout, "elapsed": elapsed}


def test_the_plan_times_shapes_and_says_what_it_chose_before_training(planned):
    log = planned["log"]
    assert "plan: " in log and "img/s" in log and "<- chosen" in log
    assert log.index("<- chosen") < log.index("budget: training time spent")  # up front, then training


def test_the_planned_recipe_holds_the_choice_with_the_plan_off(planned):
    recipe = yaml.safe_load((planned["out"] / "recipe.yaml").read_text())
    assert recipe["budget"]["plan"] is None
    shape = next(s for s in BY_NAME.values() if s.model_keys(32)["hidden_size"] == recipe["model"]["hidden_size"]
                 and s.model_keys(32)["num_hidden_layers"] == recipe["model"]["num_hidden_layers"])
    assert recipe["model"]["stem"] == shape.stem and recipe["model"]["patch_size"] == shape.patch_size(32)
    config = json.loads((planned["out"] / "config.json").read_text())
    assert config["hidden_size"] == recipe["model"]["hidden_size"]  # the saved model is the planned one


def test_a_planned_run_ends_inside_its_budget_with_the_learning_rate_at_its_minimum(planned):
    interpreter_startup = 10  # importing torch + transformers on a busy 2-core machine
    assert planned["elapsed"] < BUDGET + interpreter_startup
    state = json.loads((planned["out"] / "trainer_state.json").read_text())
    lrs = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert max(lrs) > 0 and lrs[-1] < max(lrs) * 1e-3


def test_the_planned_recipe_repeats_the_run_without_the_probe(planned, tmp_path):
    out = tmp_path / "again"
    result, _ = cli(str(planned["out"] / "recipe.yaml"), "--training.output_dir", str(out), "--resume", "never")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "<- chosen" not in result.stderr + result.stdout
    first, again = (json.loads((d / "config.json").read_text()) for d in (planned["out"], out))
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}


@pytest.mark.parametrize("args, message", [
    (["--budget.time", "null"], "set budget.time"),
    (["--model.pretrained", "google/vit-base-patch16-224"], "model.pretrained fixes it"),
    (["--budget.plan", "null"], "model.stem: 'auto' lets the budget planner"),
    (["--data.streaming", "true"], "a stream has none"),
])
def test_a_plan_that_cannot_be_made_is_an_error_before_anything_loads(args, message, tmp_path, capsys):
    code = main([str(ROOT / "recipes" / "cifar10_auto.yaml"), "--data.dataset", str(tmp_path / "nowhere"),
                 "--training.output_dir", str(tmp_path / "out"), *args])
    assert code == 2 and message in capsys.readouterr().err
