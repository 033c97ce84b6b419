"""Accuracy (top-1): the fraction of images whose predicted class is the true one."""

import evaluate

from vit_hf.metrics.scoring import CLASS_IDS, INPUTS


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=__doc__, citation="", inputs_description=INPUTS, features=CLASS_IDS,
                                   format="numpy")

    def _compute(self, predictions, references):
        return {"accuracy": float((predictions == references).mean())}
