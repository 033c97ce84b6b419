"""Macro-averaged F1: the unweighted mean over classes of each class's F1, 2 TP / (2 TP + FP + FN).

Over the classes present in the references or the predictions, as scikit-learn's
f1_score(average="macro"): a rare class weighs as much as a common one.
"""

import evaluate

from vit_hf.metrics.scoring import CLASS_IDS, INPUTS, macro_mean, per_class_counts


class F1Macro(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=__doc__, citation="", inputs_description=INPUTS, features=CLASS_IDS,
                                   format="numpy")

    def _compute(self, predictions, references):
        tp, fp, fn = per_class_counts(predictions, references)
        return {"f1_macro": macro_mean(2 * tp, 2 * tp + fp + fn)}
