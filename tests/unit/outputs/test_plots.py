"""curves.png from a real run's trainer_state.json; confusion_matrix.png and per-class accuracy from predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vit_hf.outputs.plots import evaluation_breakdown, log_series, plot_curves, write_curves


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_curves_png_from_a_real_runs_state(finished):
    output_dir = finished[0]
    path = write_curves(output_dir)
    assert path == output_dir / "curves.png"
    assert png_size(path) == (1200, 800)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    xs, ys = log_series(history, "images_seen", "eval_accuracy")
    assert xs == [24, 48, 48] and all(0 <= y <= 1 for y in ys)  # two evaluations in training, then the final one


def test_no_curves_before_there_is_a_state(tmp_path):
    assert write_curves(tmp_path) is None


def test_curves_of_several_runs_overlay_on_one_figure(tmp_path):
    run = [{"loss": 2.0, "elapsed_seconds": 60, "images_seen": 100}, {"eval_accuracy": 0.5, "elapsed_seconds": 900,
                                                                       "images_seen": 200}]
    path = plot_curves({"a": run, "b": run[:1]}, tmp_path / "overlay.png")
    assert png_size(path) == (1200, 800)


def hand_made_predictions():
    """3 classes, 10 images: class 0 all right, class 1 half taken for 2, class 2 right once in 3."""
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    top1 = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 1])
    others = (top1[:, None] + np.array([1, 2])) % 3  # top-k rows: best first, then the rest
    return np.concatenate([top1[:, None], others], axis=1), labels


def test_per_class_accuracy_and_confusions_are_right(tmp_path):
    predictions, labels = hand_made_predictions()
    breakdown = evaluation_breakdown(predictions, labels, ["cat", "dog", "fox"], tmp_path)
    assert breakdown["eval_per_class_accuracy"] == pytest.approx({"cat": 1.0, "dog": 0.5, "fox": 1 / 3})
    assert breakdown["eval_top_confusions"][0] == {"true": "dog", "predicted": "fox", "count": 2,
                                                   "fraction_of_true": 0.5}
    assert {(p["true"], p["predicted"]) for p in breakdown["eval_top_confusions"]} == {
        ("dog", "fox"), ("fox", "cat"), ("fox", "dog")}
    json.dumps(breakdown)  # mergeable into eval_results.json as is


def test_a_class_missing_from_the_evaluation_has_no_accuracy(tmp_path):
    predictions, labels = hand_made_predictions()
    breakdown = evaluation_breakdown(predictions, labels, ["cat", "dog", "fox", "owl"], tmp_path)
    assert breakdown["eval_per_class_accuracy"]["owl"] is None


def test_confusion_matrix_png_for_10_classes_has_readable_cells(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    predictions = np.where(rng.random(500) < 0.8, labels, rng.integers(0, 10, 500))[:, None]
    evaluation_breakdown(predictions, labels, [f"class_{i}" for i in range(10)], tmp_path)
    assert png_size(tmp_path / "confusion_matrix.png") == (600, 600)


def test_confusion_matrix_png_for_1000_classes_lists_the_confused_pairs(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 1000, 5000)
    predictions = np.where(rng.random(5000) < 0.7, labels, rng.integers(0, 1000, 5000))[:, None]
    breakdown = evaluation_breakdown(predictions, labels, [f"n{i:08d}" for i in range(1000)], tmp_path)
    assert png_size(tmp_path / "confusion_matrix.png") == (1600, 900)
    assert len(breakdown["eval_per_class_accuracy"]) == 1000
    assert len(breakdown["eval_top_confusions"]) == 20
