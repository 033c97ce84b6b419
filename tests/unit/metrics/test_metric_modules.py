"""vit_hf's metrics as evaluate loads them: each against a value worked out by hand and against scikit-learn,
and the registry against the module folders the package ships."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from vit_hf.metrics import METRICS, MODULES, is_hub_metric, metric_info, module_path, result_key

# Four classes, eight images: class 3 is never predicted, class 2 never true.
REFERENCES = [0, 0, 0, 1, 1, 3, 3, 1]
TOP_1 = [0, 0, 1, 1, 2, 0, 1, 1]
# Per class (TP, FP, FN) over the classes present, 0..3: (2,1,1), (2,2,1), (0,1,0), (0,0,2).
BY_HAND = {
    "accuracy": 4 / 8,
    "precision_macro": (2 / 3 + 2 / 4 + 0 + 0) / 4,
    "recall_macro": (2 / 3 + 2 / 3 + 0 + 0) / 4,  # class 2 has no true images: recall 0/0 counts 0
    "f1_macro": (4 / 6 + 4 / 7 + 0 + 0) / 4,  # 2 TP / (2 TP + FP + FN)
}
SKLEARN = {"f1_macro": f1_score, "precision_macro": precision_score, "recall_macro": recall_score}


@pytest.fixture(scope="module")
def modules():
    return {name: evaluate.load(str(module_path(name)), keep_in_memory=True) for name in METRICS}


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_each_top_1_metric_matches_the_value_worked_out_by_hand(modules, name):
    assert modules[name].compute(predictions=TOP_1, references=REFERENCES) == {name: pytest.approx(BY_HAND[name])}


def test_top5_accuracy_counts_the_true_class_anywhere_in_the_top_k(modules):
    top_k = [[3, 0, 1, 2, 4], [1, 2, 3, 4, 5], [5, 4, 3, 2, 0], [6, 7, 8, 9, 1]]  # hits: yes, no, yes, yes
    assert modules["top5_accuracy"].compute(predictions=top_k, references=[0, 0, 0, 1]) == {"top5_accuracy": 0.75}
    # Fewer classes than 5: k is the number of classes, and the true one is always among them.
    assert modules["top5_accuracy"].compute(predictions=[[1, 0, 2], [2, 1, 0]], references=[0, 0]) == {
        "top5_accuracy": 1.0}


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_macro_averages_match_scikit_learn_when_classes_are_missing(modules, name):
    rng = np.random.default_rng(0)
    references = rng.integers(0, 7, 300)  # class 7 only ever predicted
    predictions = np.where(rng.random(300) < 0.6, references, rng.integers(0, 8, 300))
    predictions[predictions == 5] = 6  # class 5 never predicted
    expected = SKLEARN[name](references, predictions, average="macro", zero_division=0)
    assert modules[name].compute(predictions=predictions, references=references)[name] == pytest.approx(expected)


def test_every_registered_metric_ships_a_module_and_every_module_is_registered():
    folders = {path.name for path in MODULES.iterdir() if path.is_dir() and not path.name.startswith("__")}
    assert folders == set(METRICS)
    for name in METRICS:
        assert (module_path(name) / f"{name}.py").is_file()


def test_hub_metrics_are_named_by_their_repository_and_reported_by_their_last_part():
    assert is_hub_metric("evaluate-metric/matthews_correlation") and is_hub_metric("someone/my_metric")
    assert not any(is_hub_metric(name) for name in ("f1_macro", "a/b/c", "/x", "x/"))
    assert result_key("evaluate-metric/matthews_correlation") == "matthews_correlation"
    info = metric_info("evaluate-metric/matthews_correlation")
    assert (info.label, info.card_type, info.top_k) == ("matthews_correlation", "matthews_correlation", False)
    assert metric_info("someone/my_metric").card_type == "someone/my_metric"
