"""Evaluation-only mode: a trained model (path or Hub id) on the recipe's eval split.

No optimizer, no training state: the model, the eval split decoded exactly as in training, the
same metrics, `eval_results.json` in `training.output_dir`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..augment.transform import build_eval_transform
from ..data.loaders import batch_collator
from ..data.pipeline import plan_loader, prepare
from ..data.sources import load_splits
from ..errors import DataError, RecipeError
from ..modeling.build import load_for_evaluation
from ..modeling.preprocessing import Preprocessing, resolve_preprocessing
from ..recipe.schema import Recipe
from ..recipe.training_args import training_arguments
from .batches import RunOptions
from .build import gpu_decoding, make_trainer, with_loader_settings
from .metrics import load_metrics

logger = logging.getLogger(__name__)


def evaluate_only(recipe: Recipe) -> dict[str, float]:
    """model.pretrained on the recipe's eval split, decoded and normalized as that model expects; the
    metrics into training.output_dir/eval_results.json."""
    if not recipe.model.pretrained:
        raise RecipeError("--eval-only evaluates model.pretrained: pass --model.pretrained PATH_OR_HUB_ID")
    args = training_arguments(recipe)
    metrics = load_metrics(recipe.evaluation.metrics)
    splits = load_splits(recipe.data, args.seed, need_train=False)
    model = load_for_evaluation(recipe.model)
    to_model_ids = label_mapping(splits.label_names, model.config.id2label)
    prep = resolve_preprocessing(recipe)
    loader = plan_loader(recipe.data, splits, prep.image_size, args, recipe.training)
    args = with_loader_settings(args, loader.settings, recipe.training)
    eval_set = prepare(recipe.data, splits, prep.image_size, prep.crop_pct, loader, args).eval
    trainer = make_trainer(model, args, prep, metrics, evaluation_options(recipe, prep), eval_dataset=eval_set,
                           data_collator=RemapLabels(to_model_ids))
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics, combined=False)
    return metrics


def evaluation_options(recipe: Recipe, prep: Preprocessing) -> RunOptions:
    """What --eval-only does to its batches: normalization, flip TTA, and with data.gpu_decode the decoding of
    the eval split's JPEG files on the device, as in training."""
    return RunOptions(eval_transform=build_eval_transform(prep.mean, prep.std),
                      eval_flip_tta=recipe.extras.eval_flip_tta, gpu_decode=gpu_decoding(recipe.data, prep))


def label_mapping(dataset_names: list[str], id2label: dict[Any, str]) -> list[int] | None:
    """dataset label id -> model label id, matched by name; None when they are the same."""
    model_names = [id2label[k] for k in sorted(id2label, key=int)]
    if model_names == dataset_names:
        return None
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(model_names))
    if generic and len(model_names) == len(dataset_names):
        logger.warning("the model's labels have no names (LABEL_i): assuming the dataset's order")
        return None
    index = {name: i for i, name in enumerate(model_names)}
    missing = [name for name in dataset_names if name not in index]
    if missing:
        raise DataError(
            f"the model does not know the dataset's classes {missing[:5]}; model labels: {model_names[:10]}"
            f"{' ...' if len(model_names) > 10 else ''}. Evaluate on a dataset with these classes (data.classes can "
            "select them)"
        )
    return [index[name] for name in dataset_names]


class RemapLabels:
    """Collate as usual, then translate the dataset's label ids into the model's."""

    def __init__(self, mapping: list[int] | None):
        self.collate = batch_collator
        self.mapping = None if mapping is None else torch.tensor(mapping)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def __call__(self, features):
        batch = self.collate(features)
        if self.mapping is not None:
            labels = batch["labels"]
            # A device store's labels are already on the accelerator: the lookup table goes where they are
            # (copied there once), as a CPU table indexed by CUDA labels raises.
            if labels.device not in self._on_device:
                self._on_device[labels.device] = self.mapping.to(labels.device)
            batch["labels"] = self._on_device[labels.device][labels]
        return batch
