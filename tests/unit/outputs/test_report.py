"""The end-of-run summary, `python -m vit_hf.report` on two real runs, and the default for report_to."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.trainers import finished_run
from vit_hf.cli.report import main
from vit_hf.outputs.runs import differing_recipe_keys
from vit_hf.outputs.summary import format_summary
from vit_hf.recipe.load import recipe_from_dict
from vit_hf.recipe.training_args import default_report_to
from vit_hf.training.budget import TimeBudget


@pytest.fixture(scope="module")
def two_runs(finished):
    """The shared run (learning rate 5e-3) and the same recipe at 1e-3."""
    other = finished[0].parent / "cifar10_tiny_lr1e-3"
    finished_run(other, learning_rate=1e-3)
    return finished[0], other


def test_the_summary_fits_one_screen_and_says_what_a_user_asks(finished):
    path, trainer, monitor, metrics = finished
    summary = format_summary(metrics, trainer.state, monitor.timing, path)
    lines = summary.splitlines()
    assert len(lines) <= 10 and max(len(line.replace(str(path), "OUT")) for line in lines) <= 100
    assert f"final {metrics['eval_accuracy']:.4f}" in summary and "best " in summary
    assert "6 steps | 48 images | 1.00 epochs" in summary and "images/s" in summary
    for phase in ("setup", "training", "evaluation", "saving", "total"):
        assert phase in summary
    assert f'pipeline("image-classification", model="{path}")' in summary
    assert "curves.png, confusion_matrix.png" in summary
    budget = TimeBudget(seconds=600, started_at=time.monotonic() - 30)
    assert "budget    10m00s: 9m30s left" in format_summary(metrics, trainer.state, monitor.timing, path, budget)


def test_phases_and_throughput_are_timed_for_the_summary(finished):
    _, trainer, monitor, _ = finished  # trained with evaluations, then predicted and saved under timed("saving")
    timing = monitor.timing
    assert timing.training > 0 and timing.evaluation > 0 and timing.saving > 0 and timing.setup >= 0
    # 6 steps, the first (warm-up; with torch_compile, compiling) timed apart and kept out of the rates.
    assert timing.steps == 5 and timing.images_per_step == 8 and timing.first_step > 0
    assert timing.images_per_second > 0
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert len(evals) == 3 and all("elapsed_seconds" in e and "images_seen" in e for e in evals)


def test_report_compares_two_runs_and_names_the_keys_that_differ(two_runs, capsys):
    first, second = two_runs
    plot = first.parent / "overlay.png"
    assert main([str(first), str(second), "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert header.split() == ["cifar10_tiny", "cifar10_tiny_lr1e-3"]
    for row in ("accuracy", "best accuracy", "top-5 accuracy", "wall time", "images/s", "steps", "epochs"):
        assert any(line.startswith(row) for line in table.splitlines()), row
    differing = [line.split() for line in table.splitlines() if line.strip().startswith("training.")]
    assert differing == [["training.learning_rate", "0.005", "0.001"]]  # output_dir names the run: not compared
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (1200, 800)


def test_report_is_a_command_that_refuses_a_folder_without_a_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vit_hf.report", str(tmp_path)], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 2
    assert "not a run's training.output_dir" in result.stderr


def test_differing_keys_include_a_key_only_one_recipe_sets():
    assert differing_recipe_keys([{"data": {"pad": 4}}, {"data": {"pad": 4}, "model": {"patch_size": 2}}]) == [
        "model.patch_size"]


def test_the_report_to_default_is_tensorboard_where_installed_and_the_trainer_accepts_it(tmp_path):
    from tests.helpers.trainers import make
    from vit_hf.training.trainer import VitTrainer

    installed = any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
    assert default_report_to() == ("tensorboard" if installed else "none")
    trainer = make(VitTrainer, tmp_path, report_to=default_report_to())
    integrations = [type(cb).__name__ for cb in trainer.callback_handler.callbacks]
    assert ("TensorBoardCallback" in integrations) == installed


def test_the_report_and_the_summary_show_every_metric_of_the_runs(finished, tmp_path, capsys):
    path, trainer, monitor, _ = finished
    other = tmp_path / "with_f1"
    other.mkdir()
    names = ["accuracy", "f1_macro", "evaluate-metric/matthews_correlation"]
    (other / "recipe.yaml").write_text(recipe_from_dict({"data": {"dataset": "x"},
                                                         "evaluation": {"metrics": names}}).to_yaml())
    results = {"eval_accuracy": 0.5, "eval_f1_macro": 0.4321, "eval_matthews_correlation": 0.25}
    (other / "eval_results.json").write_text(json.dumps(results))
    assert main([str(path), str(other)]) == 0
    rows = {line.split("  ")[0]: line.split()[-2:] for line in capsys.readouterr().out.splitlines()}
    assert rows["top-5 accuracy"][1] == "-" and rows["F1 (macro)"] == ["-", "0.4321"]
    assert rows["matthews_correlation"] == ["-", "0.2500"]
    summary = format_summary(results, trainer.state, monitor.timing, other, metric_names=names)
    assert "metrics   F1 (macro) 0.4321 | matthews_correlation 0.2500" in summary
    assert "metrics " not in format_summary(results, trainer.state, monitor.timing, other)  # the default metrics
