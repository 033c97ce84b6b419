"""Top-1 and top-5 accuracy, offline.

`evaluate.load("accuracy")` fetches a script from the Hub, so it fails without network; top-k
accuracy is two lines of numpy. The logits are reduced to top-k indices on the device first, so the
Trainer gathers N x 5 integers instead of N x num_labels floats.
"""

from __future__ import annotations

import numpy as np
import torch

TOP_K = 5


def top_k_predictions(logits, labels) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: the indices of the K largest logits, best first."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    k = min(TOP_K, logits.shape[-1])
    return logits.topk(k, dim=-1).indices


def compute_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics`: accuracy and top5_accuracy (the Trainer prefixes them with eval_)."""
    top_k, labels = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
    hits = top_k == labels[:, None]
    return {"accuracy": float(hits[:, 0].mean()), "top5_accuracy": float(hits.any(axis=1).mean())}
