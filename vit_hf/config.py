"""The recipe's sections as dataclasses: every key, its type, its default and its help text.

`training:` is not here: it is `transformers.TrainingArguments` verbatim (see recipe.py).
The help text of each field is what `python -m vit_hf.run --help` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# ImageNet statistics: the usual choice for from-scratch training when the recipe names none.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _key(default, help_text: str):
    """A field with its help text; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class DataConfig:
    dataset: str | None = _key(
        None,
        "Hub dataset id (uoft-cs/cifar10) or a local path: a folder of parquet/arrow files, an "
        "imagefolder, or a save_to_disk folder. Required.",
    )
    config: str | None = _key(None, "Dataset configuration name, for Hub datasets that have several.")
    train_split: str = _key("train", "Split to train on.")
    eval_split: str | None = _key(
        None,
        "Split to evaluate on. Default: 'validation', 'valid', 'val' or 'test', the first that exists; "
        "when none exists, validation_size carves one out of the train split.",
    )
    validation_size: float = _key(
        0.1,
        "When the dataset has no eval split: the fraction (< 1) or number (>= 1) of train examples held "
        "out, stratified by label and seeded by training.seed. Streams hold out by a seeded hash of each "
        "image (not stratified; a count needs the stream's length).",
    )
    image_column: str | None = _key(None, "Column holding the images. Default: 'image' or 'img', whichever exists.")
    label_column: str | None = _key(
        None, "Column holding the class labels. Default: 'label', 'labels', 'fine_label' or 'class', whichever exists."
    )
    streaming: bool = _key(False, "Read the dataset as a stream (IterableDataset); needs training.max_steps or budget.time.")
    image_size: int | None = _key(
        None, "Training and evaluation resolution in pixels. Default: the pretrained model's, else 224."
    )
    classes: list[str] | int | None = _key(
        None, "Keep only these classes: a list of label names, or a count (the first N label ids)."
    )
    max_per_class: int | None = _key(
        None, "Keep at most this many training images per class (seeded). Map-style datasets only."
    )
    max_train_samples: int | None = _key(None, "Keep at most this many training images (seeded shuffle, then head).")
    max_eval_samples: int | None = _key(None, "Keep at most this many evaluation images (seeded shuffle, then head).")
    mean: list[float] | None = _key(
        None, "Per-channel normalization mean (0-1 scale). Default: the pretrained image processor's, else ImageNet's."
    )
    std: list[float] | None = _key(
        None, "Per-channel normalization std (0-1 scale). Default: the pretrained image processor's, else ImageNet's."
    )
    crop: Literal["random_resized", "pad", "none"] = _key(
        "random_resized",
        "Training crop: 'random_resized' (scale/ratio jitter, as Inception/DeiT), 'pad' (pad-and-crop, as for "
        "CIFAR), or 'none'.",
    )
    crop_scale: list[float] = _key([0.35, 1.0], "random_resized: range of the crop's area, as a fraction of the image.")
    crop_ratio: list[float] = _key([0.75, 1.3333], "random_resized: range of the crop's aspect ratio.")
    pad: int = _key(4, "pad: pixels of reflection padding before the random crop.")
    hflip: float = _key(0.5, "Probability of a horizontal flip of each training image.")
    color_jitter: float = _key(0.0, "Strength of brightness/contrast/saturation jitter (0 = off; 0.4 is strong).")
    crop_pct: float = _key(
        1.0,
        "Evaluation geometry: resize the shorter side to image_size / crop_pct, then center-crop image_size. "
        "1.0 keeps the whole square image; 0.875 is the classic ImageNet center crop.",
    )


@dataclass
class ModelConfig:
    preset: Literal["vit-tiny", "vit-small", "vit-base"] | None = _key(
        "vit-tiny",
        "Architecture for training from scratch: vit-tiny (192 wide, 12 layers, 3 heads), vit-small "
        "(384, 12, 6) or vit-base (768, 12, 12). Any ViTConfig field given beside it (patch_size, "
        "hidden_size, num_hidden_layers, ...) overrides the preset.",
    )
    pretrained: str | None = _key(
        None,
        "Hub id or local path of a ViT checkpoint to fine-tune (a new head is made for the dataset's "
        "labels), or to evaluate with --eval-only. Overrides preset.",
    )
    attn_implementation: Literal["auto", "eager", "sdpa"] = _key(
        "auto", "Attention kernel: 'sdpa' on GPUs, 'eager' on CPUs (faster there with bf16) when 'auto'."
    )
    trust_remote_code: bool = _key(False, "Allow code from the pretrained repository to run. Only for sources you trust.")


@dataclass
class EarlyStoppingConfig:
    patience: int | None = _key(
        None,
        "Stop after this many evaluations without improvement of training.metric_for_best_model "
        "(EarlyStoppingCallback). None = off. Needs an eval_strategy.",
    )
    threshold: float = _key(0.0, "Minimum improvement that resets the patience.")


@dataclass
class BudgetConfig:
    time: float | None = _key(
        None,
        "Wall-clock limit for the whole run: '90s', '45m', '24h', or seconds. Training stops early enough for "
        "the final evaluation, save and push to end inside it. Counted across restarts: a resumed run "
        "ends on the same deadline. None = no limit.",
    )
    save_every: float | Literal["auto"] | None = _key(
        "auto",
        "Also save a checkpoint every this much wall time ('30m'), besides training.save_strategy, so a "
        "crash loses at most that. 'auto': a tenth of budget.time, between 10 s and 30 min (none without "
        "a budget). None = only the Trainer's saves.",
    )


RESUME_HELP = (
    "Where training continues from: 'auto' (the newest complete checkpoint in training.output_dir, "
    "if any), 'never', 'hub' (the newest checkpoint pushed to training.hub_model_id), or a checkpoint "
    "folder. training.resume_from_checkpoint, when set, wins."
)

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "early_stopping": EarlyStoppingConfig,
    "budget": BudgetConfig,
}
