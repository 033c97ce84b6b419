"""The Trainer's metrics: evaluate modules fed the device's top-k indices, and Hub metrics from evaluate's cache."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from tests.helpers.trainers import TinyImages, make
from vit_hf.errors import RecipeError
from vit_hf.training.metrics import load_metrics
from vit_hf.training.trainer import VitTrainer

# What evaluate leaves in its module cache after `evaluate.load("evaluate-metric/matthews_correlation")` online:
# the Hub's script (its computation, as the Hub's: scikit-learn's matthews_corrcoef) in a folder named by its hash.
CACHED_HUB_SCRIPT = '''"""Matthews correlation coefficient."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="", citation="", features=datasets.Features(
            {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}))

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
'''
# A cached Hub metric made for text: it cannot score class ids.
CACHED_TEXT_SCRIPT = '''"""Needs strings."""

import datasets
import evaluate


class NeedsText(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="", citation="", features=datasets.Features(
            {"predictions": datasets.Value("string"), "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"needs_text": len(predictions[0])}
'''


def cache_hub_module(repo: str, script: str) -> None:
    """Write `script` where evaluate caches the Hub module `repo` (HF_MODULES_CACHE: this session's, conftest)."""
    import evaluate

    folder = evaluate.config.HF_MODULES_CACHE / "evaluate_modules" / "metrics" / repo.replace("/", "--") / ("0" * 64)
    folder.mkdir(parents=True, exist_ok=True)
    for init in (folder / "__init__.py", folder.parent / "__init__.py"):
        init.touch()
    (folder / f"{repo.split('/')[-1]}.py").write_text(script)


def test_a_real_evaluation_scores_the_top_1_class_and_the_top_k(tmp_path):
    trainer = make(VitTrainer, tmp_path)  # untrained, 3 classes: its predictions are far from perfect
    trainer.compute_metrics = load_metrics(["accuracy", "top5_accuracy", "f1_macro", "recall_macro"])
    output = trainer.predict(TinyImages(seed=1), metric_key_prefix="eval")
    top_1, labels = output.predictions[:, 0], output.label_ids
    assert output.predictions.shape == (48, 3)  # the device's top-k indices (k: the 3 classes), not logits
    metrics = output.metrics
    assert metrics["eval_accuracy"] == pytest.approx(np.mean(top_1 == labels))
    assert metrics["eval_top5_accuracy"] == 1.0
    assert metrics["eval_f1_macro"] == pytest.approx(f1_score(labels, top_1, average="macro", zero_division=0))
    assert metrics["eval_recall_macro"] == pytest.approx(recall_score(labels, top_1, average="macro", zero_division=0))


def test_a_cached_hub_metric_loads_offline_and_scores_the_top_1_class():
    from transformers import EvalPrediction

    cache_hub_module("evaluate-metric/matthews_correlation", CACHED_HUB_SCRIPT)
    metrics = load_metrics(["accuracy", "evaluate-metric/matthews_correlation"])  # conftest: HF_HUB_OFFLINE=1
    top_k = np.array([[0, 1], [1, 0], [1, 0], [0, 1]])
    results = metrics(EvalPrediction(predictions=top_k, label_ids=np.array([0, 1, 0, 0])))
    assert results["accuracy"] == 0.75 and results["matthews_correlation"] == pytest.approx(0.5773502)


def test_a_hub_metric_that_cannot_score_class_ids_fails_when_loaded():
    cache_hub_module("someone/needs_text", CACHED_TEXT_SCRIPT)
    with pytest.raises(RecipeError, match="'someone/needs_text' cannot score class ids"):
        load_metrics(["accuracy", "someone/needs_text"])


def test_an_uncached_hub_metric_offline_says_how_to_cache_it():
    with pytest.raises(RecipeError) as info:
        load_metrics(["accuracy", "evaluate-metric/not_in_the_cache"])
    message = str(info.value)
    assert "'evaluate-metric/not_in_the_cache'" in message and "HF_HUB_OFFLINE" in message
    assert "evaluate.load('evaluate-metric/not_in_the_cache')" in message and "HF_MODULES_CACHE" in message
