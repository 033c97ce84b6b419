"""evaluation.metrics through the real CLI, offline, each run with an empty evaluate module cache of its own:
vit_hf's metrics in eval_results.json, the logs, TensorBoard, the model card and the report; a Hub metric that
is not cached, refused before any data is read; two DDP ranks loading the modules into one cache at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tests.helpers import ROOT, free_port
from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.report import main as report

METRICS = ["accuracy", "top5_accuracy", "f1_macro", "precision_macro", "recall_macro"]


def run_cli(recipe: Path, cache: Path, processes: int = 1) -> subprocess.CompletedProcess:
    """`python -m vit_hf.run RECIPE` (or torchrun) offline, evaluate's caches in the empty folder `cache`."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                str(free_port())] if processes > 1 else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cache / "modules"),
           "HF_METRICS_CACHE": str(cache / "metrics"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *launcher, "-m", "vit_hf.run", str(recipe)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def metrics_recipe(tmp_path: Path, metrics: list[str], **training) -> Path:
    data = make_imagefolder(tmp_path / "data", per_class=12, size=20)
    recipe = tiny_recipe(data, tmp_path / "out", num_train_epochs=2, **training)
    recipe["evaluation"] = {"metrics": metrics}
    return write_recipe(tmp_path, recipe)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs ranked by macro F1 (the best checkpoint reloaded at the end), with TensorBoard."""
    tmp = tmp_path_factory.mktemp("metrics")
    recipe = metrics_recipe(tmp, METRICS, metric_for_best_model="f1_macro", load_best_model_at_end=True,
                            report_to="tensorboard")
    result = run_cli(recipe, tmp / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": tmp / "out", "cache": tmp / "cache", "log": result.stderr + result.stdout}


def test_the_metrics_land_in_eval_results_and_the_log_history(trained):
    results = json.loads((trained["out"] / "eval_results.json").read_text())
    for name in METRICS:
        assert 0 <= results[f"eval_{name}"] <= 1, name
    state = json.loads((trained["out"] / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_f1_macro" in entry]
    assert len(evaluations) == 3  # each epoch's and the final one, through Trainer.log
    assert state["best_metric"] == max(entry["eval_f1_macro"] for entry in evaluations[:2])
    assert "metrics   F1 (macro) " in trained["log"]  # the end-of-run summary


def test_the_metrics_reach_tensorboard(trained):
    events = b"".join(path.read_bytes() for path in (trained["out"] / "runs").rglob("events.out.tfevents.*"))
    for name in ("f1_macro", "precision_macro", "recall_macro", "top5_accuracy"):
        assert f"eval/{name}".encode() in events, name


def test_the_model_card_holds_macro_f1_in_its_model_index(trained):
    card = ModelCard.load(trained["out"] / "README.md")
    results = json.loads((trained["out"] / "eval_results.json").read_text())
    f1 = next(r for r in card.data.eval_results if r.metric_type == "f1")
    assert (f1.metric_name, f1.metric_args, f1.metric_value) == ("F1 (macro)", {"average": "macro"},
                                                                  results["eval_f1_macro"])
    assert {"accuracy", "top_5_accuracy", "precision", "recall"} <= {r.metric_type for r in card.data.eval_results}


def test_the_report_shows_the_metrics(trained, capsys):
    assert report([str(trained["out"])]) == 0
    table = capsys.readouterr().out
    assert all(row in table for row in ("F1 (macro)", "precision (macro)", "recall (macro)", "top-5 accuracy"))


def test_vit_hf_metrics_load_from_the_package_into_an_empty_cache(trained):
    cached = trained["cache"] / "modules" / "evaluate_modules" / "metrics"
    for name in METRICS:
        assert len(list((cached / name).glob(f"*/{name}.py"))) == 1, name


def test_an_uncached_hub_metric_offline_stops_the_run_before_any_data_is_read(tmp_path):
    recipe = metrics_recipe(tmp_path, ["accuracy", "evaluate-metric/matthews_correlation"])
    result = run_cli(recipe, tmp_path / "cache")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: evaluation.metrics: the Hub metric 'evaluate-metric/matthews_correlation' is not in evaluate's " \
           f"module cache ({tmp_path / 'cache' / 'modules'})" in result.stderr
    assert "evaluate.load('evaluate-metric/matthews_correlation')" in result.stderr
    assert "data: " not in result.stderr and not (tmp_path / "out" / "recipe.yaml").exists()


def test_two_ranks_load_the_metrics_into_one_empty_cache_at_once(tmp_path):
    recipe = metrics_recipe(tmp_path, ["accuracy", "f1_macro"], max_steps=2, eval_strategy="no", save_strategy="no",
                            report_to="none")
    result = run_cli(recipe, tmp_path / "cache", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert 0 <= results["eval_f1_macro"] <= 1
