"""The evaluation metrics: evaluate modules, fed the top-k class indices the device computes.

    metrics = load_metrics(recipe.evaluation.metrics)        # at the start of a run, before any data
    VitTrainer(..., compute_metrics=metrics, preprocess_logits_for_metrics=top_k_predictions)

The logits are reduced to the indices of their TOP_K largest on the device (`top_k_predictions`), so
the Trainer gathers N x 5 integers instead of N x num_labels floats. Each metric is an evaluate
module: top5_accuracy scores those indices, every other metric the top-1 class.

Where the modules come from (`load_metric`):
- vit_hf's own (the registry: vit_hf/metrics/__init__.py) are evaluate modules shipped inside the package,
  vit_hf/metrics/<name>/<name>.py, loaded by path: evaluate copies the script into its module cache
  (HF_MODULES_CACHE/evaluate_modules/metrics/<name>/<hash of the script>/) and imports it from there.
  No network, in any cache (a fresh one included), and several processes at once: evaluate copies under
  a file lock.
- a Hub metric (owner/name, evaluate-metric/matthews_correlation) is downloaded into that cache, or,
  offline, read from it. One that cannot be loaded, or cannot score class ids, is a RecipeError before any
  data is read, naming the metric and how to cache it.

Every rank computes the metrics: the Trainer hands each one the gathered predictions (gather_for_metrics),
and early stopping and the best checkpoint read them on every rank. Each module keeps its inputs in memory
(keep_in_memory): no cache files, so evaluate's process_id/num_process file exchange is not needed.
"""

from __future__ import annotations

import evaluate
import numpy as np
import torch
from huggingface_hub import constants as hub_constants

from ..errors import RecipeError
from ..metrics import METRICS, is_hub_metric, metric_info, module_path

TOP_K = 5
# A tiny evaluation a Hub metric must score at load time: one that cannot take class ids fails there, not at
# the first evaluation, hours into the run.
PROBE = {"predictions": [0, 1, 1], "references": [0, 1, 0]}


def top_k_predictions(logits, labels) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: the indices of the K largest logits, best first."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    k = min(TOP_K, logits.shape[-1])
    return logits.topk(k, dim=-1).indices


class EvaluationMetrics:
    """`compute_metrics`: each metric's results on one evaluation's predictions (the Trainer prefixes eval_)."""

    def __init__(self, modules: dict[str, evaluate.EvaluationModule]):
        self.modules = modules

    @property
    def names(self) -> list[str]:
        """evaluation.metrics, in its order."""
        return list(self.modules)

    def __call__(self, eval_pred) -> dict[str, float]:
        top_k, labels = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
        results: dict[str, float] = {}
        for name, module in self.modules.items():
            predictions = top_k if metric_info(name).top_k else top_k[:, 0]
            results |= module.compute(predictions=predictions, references=labels)
        return results


def load_metrics(names: list[str]) -> EvaluationMetrics:
    """The metrics of evaluation.metrics, loaded (a Hub metric that cannot be: RecipeError)."""
    return EvaluationMetrics({name: load_metric(name) for name in names})


def load_metric(name: str) -> evaluate.EvaluationModule:
    if is_hub_metric(name):
        return load_hub_metric(name)
    return evaluate.load(str(module_path(name)), keep_in_memory=True)


def load_hub_metric(name: str) -> evaluate.EvaluationModule:
    """A Hub metric (owner/name): downloaded, or from evaluate's module cache offline; checked on class ids."""
    if hub_constants.is_offline_mode():
        # evaluate reads only its own HF_EVALUATE_OFFLINE (at import): with HF_HUB_OFFLINE alone it would still
        # send its requests (a download count, the script's ETag), each waiting up to 100 s where the network
        # drops them, before falling back to the cache.
        evaluate.config.HF_EVALUATE_OFFLINE = True
    try:
        module = evaluate.load(name, keep_in_memory=True)
    except (FileNotFoundError, ConnectionError) as exc:
        raise RecipeError(hub_metric_unavailable(name, exc)) from None
    except ImportError as exc:  # the metric's script imports a package that is not installed
        raise RecipeError(f"evaluation.metrics: the Hub metric {name!r} cannot be loaded: {exc}") from None
    check_scores_class_ids(name, module)
    return module


def hub_metric_unavailable(name: str, exc: Exception) -> str:
    cache = evaluate.config.HF_MODULES_CACHE
    if evaluate.config.HF_EVALUATE_OFFLINE:
        return (
            f"evaluation.metrics: the Hub metric {name!r} is not in evaluate's module cache ({cache}), and offline "
            "(HF_HUB_OFFLINE) it cannot be downloaded. Cache it once with network, with the same HF_MODULES_CACHE: "
            f"python -c \"import evaluate; evaluate.load('{name}')\"; or point HF_MODULES_CACHE at a cache that holds "
            f"it (evaluate_modules/metrics/{name.replace('/', '--')}); or drop it from evaluation.metrics"
        )
    return (f"evaluation.metrics: the Hub metric {name!r} could not be loaded ({exc}); check its name at "
            "https://huggingface.co/evaluate-metric, or use one of vit_hf's: " + ", ".join(METRICS))


def check_scores_class_ids(name: str, module: evaluate.EvaluationModule) -> None:
    try:
        module.compute(**PROBE)
    except Exception as exc:  # whatever the script raises, it cannot score this run's predictions
        raise RecipeError(f"evaluation.metrics: the Hub metric {name!r} cannot score class ids (the top-1 "
                          f"predictions and the labels): {type(exc).__name__}: {exc}") from None
