"""Top-5 accuracy: the fraction of images whose true class is among the 5 most likely predicted ones.

The predictions are the top-k class ids of each image, best first; with fewer than 5 classes, k is the
number of classes, and every image is a hit.
"""

import evaluate
import numpy as np

from vit_hf.metrics.scoring import INPUTS, TOP_K_IDS


class Top5Accuracy(evaluate.Metric):
    def _info(self):
        # No numpy format: evaluate allows it for scalar features only; the lists become an array below.
        return evaluate.MetricInfo(description=__doc__, citation="", inputs_description=INPUTS, features=TOP_K_IDS)

    def _compute(self, predictions, references):
        top_k, references = np.asarray(predictions)[:, :5], np.asarray(references)
        return {"top5_accuracy": float((top_k == references[:, None]).any(axis=1).mean())}
