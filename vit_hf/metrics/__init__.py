"""vit_hf's metrics: the registry (what each one is called, takes and reports as), and an evaluate module each.

    vit_hf/metrics/<name>/<name>.py    an evaluate metric module: evaluate.load(str(module_path(name)))

`evaluation.metrics` names them; a metric from the Hub is named by its repository, owner/name
(evaluate-metric/matthews_correlation), and is reported under the key its name ends with, as evaluate's
own metrics return it. The registry is plain data: the recipe's validation and the model card read it
without importing evaluate, torch or the rest of vit_hf. training/metrics.py loads and computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULES = Path(__file__).parent


@dataclass(frozen=True)
class Metric:
    """One of vit_hf's metrics; its name is the recipe's, the result's key (eval_<name>) and its module's folder."""

    label: str  # what tables (the card's, the report's) call it
    card_name: str  # its name in the model card's model-index
    card_type: str  # its type there: the id of the Hub metric that computes the same value, where one does
    card_args: dict[str, Any] | None = None  # that Hub metric's arguments for the same value
    on_hub: bool = True  # card_type is a Hub metric, so the card's `metrics:` lists it
    top_k: bool = False  # it scores the top-k class indices (best first); the others score the top-1 class


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy (top-1)", "Accuracy", "accuracy"),
    "top5_accuracy": Metric("top-5 accuracy", "Top-5 Accuracy", "top_5_accuracy", on_hub=False, top_k=True),
    "f1_macro": Metric("F1 (macro)", "F1 (macro)", "f1", {"average": "macro"}),
    "precision_macro": Metric("precision (macro)", "Precision (macro)", "precision", {"average": "macro"}),
    "recall_macro": Metric("recall (macro)", "Recall (macro)", "recall", {"average": "macro"}),
}
DEFAULT_METRICS = ["accuracy", "top5_accuracy"]
# The owner of evaluate's own metrics on the Hub: their ids (the card's metric types) go without it.
CANONICAL_OWNER = "evaluate-metric/"
# Every run computes it: the summary, the report, the card and --search rank runs by eval_accuracy.
REQUIRED_METRIC = "accuracy"


def is_hub_metric(name: str) -> bool:
    """owner/name: a metric repository on the Hub, as evaluate.load names it."""
    owner, slash, metric = name.partition("/")
    return bool(slash and owner and metric and "/" not in metric)


def result_key(name: str) -> str:
    """The key a metric's value is reported under (eval_<key>): a Hub metric's is the last part of its name."""
    return name.rsplit("/", 1)[-1]


def metric_info(name: str) -> Metric:
    """The registry's entry; for a Hub metric, one that calls it by its key and, in the card, by its Hub id."""
    if name in METRICS:
        return METRICS[name]
    return Metric(label=result_key(name), card_name=result_key(name), card_type=name.removeprefix(CANONICAL_OWNER))


def module_path(name: str) -> Path:
    """The folder of one of vit_hf's evaluate modules."""
    return MODULES / name
