"""Macro-averaged precision: the unweighted mean over classes of TP / (TP + FP).

Over the classes present in the references or the predictions, as scikit-learn's
precision_score(average="macro"); a class never predicted scores 0.
"""

import evaluate

from vit_hf.metrics.scoring import CLASS_IDS, INPUTS, macro_mean, per_class_counts


class PrecisionMacro(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=__doc__, citation="", inputs_description=INPUTS, features=CLASS_IDS,
                                   format="numpy")

    def _compute(self, predictions, references):
        tp, fp, _ = per_class_counts(predictions, references)
        return {"precision_macro": macro_mean(tp, tp + fp)}
