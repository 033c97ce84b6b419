"""Macro-averaged recall: the unweighted mean over classes of TP / (TP + FN).

Over the classes present in the references or the predictions, as scikit-learn's
recall_score(average="macro"); a class predicted but absent from the references scores 0.
"""

import evaluate

from vit_hf.metrics.scoring import CLASS_IDS, INPUTS, macro_mean, per_class_counts


class RecallMacro(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=__doc__, citation="", inputs_description=INPUTS, features=CLASS_IDS,
                                   format="numpy")

    def _compute(self, predictions, references):
        tp, _, fn = per_class_counts(predictions, references)
        return {"recall_macro": macro_mean(tp, tp + fn)}
