"""What vit_hf's evaluate modules share: their input features, and the per-class counts of the macro averages.

Imported by the modules (vit_hf/metrics/<name>/<name>.py) from the installed vit_hf: evaluate copies a
module's own script into its cache, and a shared file beside it would have to be copied into each folder.
"""

from __future__ import annotations

import datasets
import numpy as np

# Top-1 predictions: one class id per image, as are the references.
CLASS_IDS = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
# Top-k predictions: the k most likely class ids per image, best first (training/metrics.top_k_predictions).
TOP_K_IDS = datasets.Features({
    "predictions": datasets.Sequence(datasets.Value("int64")),
    "references": datasets.Value("int64"),
})
INPUTS = """
Args:
    predictions: the predicted class id of each image (top5_accuracy: its top-k class ids, best first).
    references: the true class id of each image.
"""


def per_class_counts(predictions, references) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives of each class that occurs in the references or the
    predictions: the classes scikit-learn's macro averages run over (a class in neither has no score)."""
    predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    classes = np.union1d(predictions, references)
    predicted, true = np.searchsorted(classes, predictions), np.searchsorted(classes, references)
    tp = np.bincount(true[predictions == references], minlength=len(classes))
    fp = np.bincount(predicted, minlength=len(classes)) - tp
    fn = np.bincount(true, minlength=len(classes)) - tp
    return tp, fp, fn


def macro_mean(numerators: np.ndarray, denominators: np.ndarray) -> float:
    """The unweighted mean over classes of numerator / denominator; a class whose denominator is 0 (precision
    of a class never predicted) scores 0, as scikit-learn's zero_division default does."""
    ratios = np.divide(numerators, denominators, out=np.zeros(len(numerators)), where=denominators > 0)
    return float(ratios.mean()) if len(ratios) else 0.0
