"""The recipe's sections as dataclasses: every key, its type, default, help text and constraint.

`training:` is not here: it is `transformers.TrainingArguments` verbatim (training_args.py). The help
text of each field is what `python -m vit_hf.run --help` prints; a field's constraint sits beside it
and is checked when its section is built. Checks across sections are in validate.py. Nothing here
imports torch, transformers or the rest of vit_hf but the metric registry (vit_hf/metrics: plain data).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import yaml

from ..errors import RecipeError
from ..metrics import DEFAULT_METRICS, METRICS, REQUIRED_METRIC

# ImageNet statistics: the usual choice for from-scratch training when the recipe names none.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# model.preset: standard widths/depths/heads (Dosovitskiy et al. 2021; DeiT for Tiny/Small); MLP ratio 4.
PRESETS: dict[str, dict[str, int]] = {
    "vit-tiny": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768},
    "vit-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
    "vit-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
DEFAULT_IMAGE_SIZE = 224  # data.image_size when neither the recipe nor a pretrained model gives one
MAX_IMAGE_PIXELS = 50_000_000  # data.max_image_pixels' default (decode.Decoding's too)
# training.lr_scheduler_type values a time budget can drive (training/schedule.py), by the shape they take.
BUDGET_SCHEDULES = {
    "cosine": "cosine",
    "cosine_with_min_lr": "cosine",
    "linear": "linear",
    "constant": "constant",
    "constant_with_warmup": "constant",
}


def _key(default, help_text: str, check: Callable[[Any], bool] | None = None, expected: str | None = None,
         augment: bool = False):
    """A field with its help text and, optionally, its constraint: `check(value)` must hold, else the
    error says `expected`. `augment`: a training-augmentation key (a search trial may change it: it
    leaves the decoded data alone). Mutable defaults are copied per instance."""
    metadata = {"help": help_text, "check": check, "expected": expected, "augment": augment}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _probability(value) -> bool:
    return 0 <= value <= 1


def _range_within(low: float, high: float) -> Callable[[Any], bool]:
    """[min, max] with low < min <= max <= high."""
    return lambda pair: len(pair) == 2 and low < pair[0] <= pair[1] <= high


class Section:
    """A recipe section: on construction, each field's constraint (see _key) is checked."""

    name: ClassVar[str]

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check, value = f.metadata.get("check"), getattr(self, f.name)
            if check is not None and not check(value):
                raise RecipeError(f"{self.name}.{f.name}: {value!r} is not valid; expected {f.metadata['expected']}")


@dataclass
class DataConfig(Section):
    name: ClassVar[str] = 'data'

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
        "when none exists, validation_size carves one out of the train split. 'holdout' carves it even when "
        "one exists: to tune (e.g. --search) without looking at the test split.",
    )
    validation_size: float = _key(
        0.1,
        "When the dataset has no eval split: the fraction (< 1) or number (>= 1) of train examples held "
        "out, stratified by label and seeded by training.seed. Streams hold out by a seeded hash of each "
        "image (not stratified; a count needs the stream's length).",
        check=lambda v: v > 0, expected='a fraction in (0, 1) or a count >= 1',
    )
    image_column: str | None = _key(None, "Column holding the images. Default: 'image' or 'img', whichever exists.")
    label_column: str | None = _key(
        None, "Column holding the class labels. Default: 'label', 'labels', 'fine_label' or 'class', whichever exists."
    )
    streaming: bool = _key(
        False,
        "Read the dataset as a stream (IterableDataset); needs training.max_steps or budget.time.",
    )
    image_size: int | None = _key(
        None, "Training and evaluation resolution in pixels. Default: the pretrained model's, else 224.",
        check=_optional(lambda v: v >= 8), expected='an integer >= 8',
    )
    storage_size: int | None = _key(
        None,
        "Side in pixels of the training images as decoded and stored (the decode-once cache; streams decode to it "
        "too): shorter side resized to it, the center square kept, JPEGs at least twice as large decoded reduced. "
        "The random-resized crop and progressive resizing then make each batch at the training size from it, on "
        "the device. Default: image_size. ImageNet: 160-192 (its 1.28M training images take 122 GB at 176 px, "
        "196 GB at 224). The eval split is always stored at image_size, with crop_pct.",
        check=_optional(lambda v: v >= 8), expected='an integer >= 8 (or null for image_size)',
    )
    classes: list[str] | int | None = _key(
        None, "Keep only these classes: a list of label names, or a count (the first N label ids).",
        check=_optional(lambda v: not isinstance(v, int) or v >= 2), expected='a count >= 2 or a list of label names',
    )
    max_per_class: int | None = _key(
        None, "Keep at most this many training images per class (seeded). Map-style datasets only.",
        check=_optional(lambda v: v >= 1), expected='an integer >= 1 (or null for all)',
    )
    max_train_samples: int | None = _key(
        None,
        "Keep at most this many training images (seeded shuffle, then head).",
        check=_optional(lambda v: v >= 1), expected='an integer >= 1 (or null for all)',
    )
    max_eval_samples: int | None = _key(
        None,
        "Keep at most this many evaluation images (seeded shuffle, then head).",
        check=_optional(lambda v: v >= 1), expected='an integer >= 1 (or null for all)',
    )
    mean: list[float] | None = _key(
        None, "Per-channel normalization mean (0-1 scale). Default: the pretrained image processor's, else ImageNet's.",
        check=_optional(lambda v: len(v) == 3), expected='3 numbers, one per RGB channel',
    )
    std: list[float] | None = _key(
        None, "Per-channel normalization std (0-1 scale). Default: the pretrained image processor's, else ImageNet's.",
        check=_optional(lambda v: len(v) == 3 and min(v) > 0), expected='3 positive numbers',
    )
    crop: Literal["random_resized", "pad", "none"] = _key(
        "random_resized",
        "Training crop: 'random_resized' (scale/ratio jitter, as Inception/DeiT), 'pad' (pad-and-crop, as for "
        "CIFAR), or 'none'.",
        augment=True,
    )
    crop_scale: list[float] = _key(
        [0.35, 1.0],
        "random_resized: range of the crop's area, as a fraction of the image.",
        check=_range_within(0, 1), expected='[min, max] with 0 < min <= max <= 1', augment=True,
    )
    crop_ratio: list[float] = _key(
        [0.75, 1.3333],
        "random_resized: range of the crop's aspect ratio.",
        check=_range_within(0, 100), expected='[min, max] with 0 < min <= max', augment=True,
    )
    pad: int = _key(
        4,
        "pad: pixels of reflection padding before the random crop.",
        check=lambda v: v >= 0, expected='an integer >= 0', augment=True,
    )
    hflip: float = _key(
        0.5,
        "Probability of a horizontal flip of each training image.",
        check=_probability, expected='a probability in [0, 1]', augment=True,
    )
    color_jitter: float = _key(
        0.0,
        "Strength of brightness/contrast/saturation jitter (0 = off; 0.4 is strong).",
        check=lambda v: 0 <= v < 1, expected='a number in [0, 1)', augment=True,
    )
    loader: Literal["auto", "device", "memory", "mmap", "decode"] = _key(
        "auto",
        "How batches reach the model. Map-style datasets are decoded once to uint8 (train at storage_size, eval at "
        "image_size) and cached; "
        "then 'device' keeps them on the accelerator (a batch is an index gather there), 'memory' in RAM, "
        "'mmap' memory-maps the cache file (larger than RAM). 'decode' decodes every image at every epoch "
        "in DataLoader workers (streams always do). 'auto': the first of device, memory, mmap that fits.",
    )
    shuffle_buffer: int = _key(
        1000,
        "Streams: rows in the shuffle buffer of each DataLoader worker (datasets' IterableDataset.shuffle; the "
        "shards are shuffled too, and both again at each epoch). Rows are undecoded: about buffer x file size "
        "of RAM per worker.",
        check=lambda v: v >= 1, expected='an integer >= 1',
    )
    cache_dir: str | None = _key(
        None,
        "Where the decode-once cache files go. Default: the datasets cache folder (HF_DATASETS_CACHE)/vit_hf. "
        "The run states their size before building and stops when the disk lacks the room.",
    )
    cache_workers: int | None = _key(
        None,
        "Processes that build the decode-once cache. Default: every core this process may use. A build killed "
        "midway keeps its finished shards; the next run decodes only the rest.",
        check=_optional(lambda v: v >= 1), expected='an integer >= 1 (or null for all cores)',
    )
    gpu_decode: bool = _key(
        False,
        "Streams and data.loader: decode on a CUDA device: DataLoader workers only read the files, and each batch "
        "of JPEGs is decoded on the GPU (torchvision.io.decode_jpeg, nvJPEG), then resized there; other formats "
        "are decoded on the CPU. Needs torchvision: pip install vit_hf[gpu-decode]. The cached loaders decode once "
        "on the CPU instead.",
    )
    progressive_start_size: int | None = _key(
        None,
        "Progressive resizing: train at this resolution (a multiple of the patch size) early, grow linearly to "
        "image_size over progressive_ramp, evaluate at image_size. None = off. FFCV-style: about 0.6-0.75 x "
        "image_size.",
        check=_optional(lambda v: v >= 8), expected='an integer >= 8 (or null for off)', augment=True,
    )
    progressive_ramp: list[float] = _key(
        [0.5, 0.85],
        "progressive: the fractions of training (of the budget, else of the steps) where the resolution starts "
        "growing and where it reaches image_size.",
        check=lambda v: len(v) == 2 and 0 <= v[0] <= v[1] <= 1,
        expected='[start, end] with 0 <= start <= end <= 1',
        augment=True,
    )
    progressive_sizes: int = _key(
        4,
        "progressive: how many distinct resolutions the ramp steps through, progressive_start_size and image_size "
        "included. With training.torch_compile each one is compiled once, so few keep compile time small.",
        check=lambda v: v >= 2, expected='an integer >= 2', augment=True,
    )
    crop_pct: float = _key(
        1.0,
        "Evaluation geometry: resize the shorter side to image_size / crop_pct, then center-crop image_size. "
        "1.0 keeps the whole square image; 0.875 is the classic ImageNet center crop.",
        check=lambda v: 0 < v <= 1, expected='a number in (0, 1]',
    )
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = _key(
        "none",
        "Automatic augmentation policy, after crop and flip: 'randaugment' (Cubuk et al. 2020; randaugment_ops "
        "ops per image at randaugment_magnitude), 'trivialaugment' (TrivialAugment-Wide, nothing to tune), "
        "or 'none'.",
        augment=True,
    )
    randaugment_ops: int = _key(
        2,
        "randaugment: ops applied to each image, one after the other (N in the paper).",
        check=lambda v: v >= 1, expected='an integer >= 1', augment=True,
    )
    randaugment_magnitude: int = _key(
        9, "randaugment: strength, 0-10 as in the paper and timm (10 = each op's AutoAugment maximum; DeiT uses 9).",
        check=lambda v: 0 <= v <= 10, expected='an integer in [0, 10]', augment=True,
    )
    random_erasing: float = _key(
        0.0,
        "Probability of erasing a random box of each training image with noise (timm's RandomErasing; DeiT: 0.25).",
        check=_probability, expected='a probability in [0, 1]', augment=True,
    )
    mixup_alpha: float = _key(
        0.0,
        "Mixup: Beta(alpha, alpha) for the batch's mixing weight (0 = off; DeiT uses 0.8).",
        check=lambda v: v >= 0, expected='a number >= 0 (0 = off)', augment=True,
    )
    cutmix_alpha: float = _key(
        0.0,
        "CutMix: Beta(alpha, alpha) for the batch's pasted area (0 = off; DeiT uses 1.0).",
        check=lambda v: v >= 0, expected='a number >= 0 (0 = off)', augment=True,
    )
    mix_prob: float = _key(
        1.0,
        "Probability that a batch is mixed at all (Mixup or CutMix), when either alpha is > 0.",
        check=_probability, expected='a probability in [0, 1]', augment=True,
    )
    mix_switch_prob: float = _key(
        0.5, "With both alphas > 0: probability that a mixed batch uses CutMix rather than Mixup.",
        check=_probability, expected='a probability in [0, 1]', augment=True,
    )
    max_image_pixels: int = _key(
        MAX_IMAGE_PIXELS,
        "An image larger than this (width x height) is never decoded whole: a JPEG is decoded reduced (1/2, 1/4 "
        "or 1/8 scale) below it, any other image is a bad image (see on_bad_image), before any pixel is decoded. "
        f"{MAX_IMAGE_PIXELS // 10**6}M pixels are {3 * MAX_IMAGE_PIXELS // 10**6} MB as RGB in each decoding process.",
        check=lambda v: v >= 1, expected='an integer >= 1',
    )
    on_bad_image: Literal["skip", "raise"] = _key(
        "skip",
        "An image that cannot be decoded (truncated, empty, not an image, above max_image_pixels): 'skip' it (the "
        "first few are logged by name, then a count), or 'raise' an error naming its file.",
    )


@dataclass
class ModelConfig(Section):
    name: ClassVar[str] = 'model'

    preset: Literal["vit-tiny", "vit-small", "vit-base"] | None = _key(
        "vit-tiny",
        "Architecture for training from scratch: vit-tiny (192 wide, 12 layers, 3 heads), vit-small "
        "(384, 12, 6) or vit-base (768, 12, 12). Any ViTConfig field given beside it (patch_size, "
        "hidden_size, num_hidden_layers, ...) overrides the preset.",
    )
    pretrained: str | None = _key(
        None,
        "Hub id or local path of a checkpoint to fine-tune: ViT, DeiT, BEiT, DINOv2, or a timm ViT (through "
        "TimmWrapper). A new head is made for the dataset's labels (unless they are the checkpoint's), and the "
        "position embeddings are resized to data.image_size. Or the model to evaluate with --eval-only. "
        "Overrides preset.",
    )
    attn_implementation: Literal["auto", "eager", "sdpa"] = _key(
        "auto", "Attention kernel. 'auto' is 'sdpa' (measured faster than 'eager' on GPUs and, in fp32, on CPUs)."
    )
    trust_remote_code: bool = _key(
        False,
        "Allow code from the pretrained repository to run. Only for sources you trust.",
    )
    stem: Literal["patch", "conv", "auto"] = _key(
        "patch",
        "How pixels become tokens: 'patch' (ViT's patch_size x patch_size projection) or 'conv' (Xiao et al. "
        "2021: log2(patch_size) 3x3 stride-2 convs with BatchNorm+ReLU, then a 1x1 conv; patch_size a power of "
        "2 >= 4). 'conv' saves a VitHf model: pipeline/AutoModel load it with vit_hf imported. 'auto' (with "
        "budget.plan: auto): the planner may choose either; otherwise it keeps to plain ViTs.",
    )
    pool: Literal["cls", "gap"] = _key(
        "cls",
        "What the head classifies: 'cls' (the CLS token) or 'gap' (the mean of the patch tokens after the final "
        "LayerNorm, big_vision's pool_type gap). Like stem: conv, 'gap' saves a VitHf model.",
    )
    posemb: Literal["learned", "sincos2d"] = _key(
        "learned",
        "Position embeddings: 'learned' or 'sincos2d' (fixed 2-D sin-cos, never trained, as big_vision and MoCo v3; "
        "saved as plain ViT weights, and kept frozen when the checkpoint is fine-tuned). hidden_size divisible by 4.",
    )
    drop_path_rate: float = _key(
        0.0,
        "Stochastic depth: the drop probability of the last block's residual branches, growing linearly from 0 "
        "at the first (DeiT/timm; DeiT-S 0.1, ViT-B 0.1-0.2). Training only: the saved model is unchanged.",
        check=lambda v: 0 <= v < 1, expected='a number in [0, 1)',
    )


@dataclass
class EarlyStoppingConfig(Section):
    name: ClassVar[str] = 'early_stopping'

    patience: int | None = _key(
        None,
        "Stop after this many evaluations without improvement of training.metric_for_best_model "
        "(EarlyStoppingCallback). None = off. Needs an eval_strategy.",
        check=_optional(lambda v: v >= 1), expected='an integer >= 1 (or null for off)',
    )
    threshold: float = _key(0.0, "Minimum improvement that resets the patience.")
    on_nonfinite_loss: Literal["stop", "skip"] = _key(
        "stop",
        "A NaN or infinite loss or gradient: its update is never applied. 'stop': training ends with a "
        "checkpoint of the last good weights and exit code 4; 'skip': a warning, and training goes on "
        "(stops as 'stop' after 10 such steps in a row).",
    )


@dataclass
class BudgetConfig(Section):
    name: ClassVar[str] = 'budget'

    time: float | None = _key(
        None,
        "Wall-clock limit for the whole run: '90s', '45m', '24h', or seconds. Training stops early enough for "
        "the final evaluation, save and push to end inside it. Counted across restarts: a resumed run "
        "ends on the same deadline. None = no limit.",
    )
    plan: Literal["auto"] | None = _key(
        None,
        "'auto': before training, time candidate shapes on this machine's data path (seconds, counted in the "
        "budget) and choose the shape (width, depth, tokens per image), batch, learning rate, warmup and "
        "regularization that budget.time buys, by the rule in vit_hf/planning/rule.py. The choice and the timings "
        "are logged; output_dir/recipe.yaml holds the planned values with plan: null, to repeat the run exactly. "
        "Needs budget.time and a from-scratch model; plain ViTs unless model.stem: auto. None = the recipe as written.",
    )
    save_every: float | Literal["auto"] | None = _key(
        "auto",
        "Also save a checkpoint every this much wall time ('30m'), besides training.save_strategy, so a "
        "crash loses at most that. 'auto': a tenth of budget.time, between 10 s and 30 min (none without "
        "a budget). None = only the Trainer's saves.",
    )


@dataclass
class ExtrasConfig(Section):
    name: ClassVar[str] = 'extras'

    """Training options beyond TrainingArguments (which `training:` holds verbatim)."""

    ema_decay: float | None = _key(
        None,
        "Keep an exponential moving average of the weights, updated after each optimizer step (e.g. 0.9998; "
        "the decay ramps up as (1+n)/(10+n) over the first steps). Evaluations use the EMA weights and they "
        "are the saved final model; checkpoints keep them for resume. With load_best_model_at_end: the best "
        "checkpoint's EMA weights. None = off.",
        check=_optional(lambda v: 0 < v < 1), expected='a number in (0, 1) such as 0.9998, or null',
    )
    layer_decay: float | None = _key(
        None,
        "Layer-wise learning-rate decay for fine-tuning (BEiT/MAE): of L blocks, block i (from 0) gets "
        "learning_rate x layer_decay^(L - i), the embeddings layer_decay^(L+1), the final norm and head the full "
        "rate. MAE: 0.75 for ViT-B. Works with any training.optim that takes parameter groups. None = off.",
        check=_optional(lambda v: 0 < v <= 1), expected='a number in (0, 1] such as 0.75, or null',
    )
    eval_flip_tta: bool = _key(
        False,
        "Evaluate with flip test-time augmentation: the mean of the logits of each image and its mirror "
        "(eval_loss: the mean of the two losses). The saved model is unchanged.",
    )
    check_host_syncs: bool = _key(
        False,
        "Diagnostics: fail the run at the first host sync (Tensor.item(), .tolist(), a blocking GPU copy...) inside "
        "a steady training step, with a traceback to it; logging, evaluation and save steps are exempt. On CUDA "
        "through torch.cuda.set_sync_debug_mode('error'), on a CPU by the tensor reads that would sync on a GPU.",
    )


@dataclass
class EvaluationConfig(Section):
    name: ClassVar[str] = 'evaluation'

    metrics: list[str] = _key(
        DEFAULT_METRICS,
        f"The metrics each evaluation computes, each an evaluate module, reported as eval_<name>: vit_hf's "
        f"{', '.join(METRICS)} (shipped inside vit_hf: no network), or a Hub metric by its repository, owner/name "
        f"(evaluate-metric/matthews_correlation: it scores the top-1 class; loaded when the run starts, from the "
        f"Hub or, with HF_HUB_OFFLINE, from evaluate's module cache). '{REQUIRED_METRIC}' is always one of them; "
        "training.metric_for_best_model may name any.",
    )


RESUME_HELP = (
    "Where training continues from: 'auto' (the newest complete checkpoint in training.output_dir, "
    "if any), 'never', 'hub' (the newest checkpoint pushed to training.hub_model_id), or a checkpoint "
    "folder. training.resume_from_checkpoint, when set, wins."
)

@dataclass
class SearchConfig(Section):
    name: ClassVar[str] = 'search'

    n_trials: int = _key(
        10, "Trials of `python -m vit_hf.run RECIPE --search` (optuna, one after the other in one process).",
        check=lambda v: v >= 1, expected="an integer >= 1",
    )
    time: float | None = _key(
        None,
        "Wall-clock limit for the whole search ('2h'), data loading and outputs included. Each trial is a "
        "budgeted run (its schedule annealed to its own deadline) with an even share of the time left, so a "
        "pruned trial's time goes to the trials after it. None = each trial gets budget.time, or the recipe's "
        "step/epoch limit.",
    )
    space: dict[str, dict] = _key(
        {},
        "What to search: dotted recipe keys (a bare key is a training key) -> {type: log_uniform or uniform, "
        "low, high}, {type: int, low, high} or {type: categorical, choices: [...]}. Searchable: training keys, "
        "model.preset and ViTConfig fields, data augmentation keys, early_stopping and extras keys.",
    )
    prune_after: int | None = _key(
        2,
        "Trials that run to the end before pruning starts; after them a trial stops at an evaluation that "
        "is below the median of the earlier trials' at the same step (optuna's MedianPruner; needs "
        "training.eval_strategy). None = no pruning.",
        check=_optional(lambda v: v >= 0), expected='an integer >= 0 (or null for no pruning)',
    )


SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "early_stopping": EarlyStoppingConfig,
    "budget": BudgetConfig,
    "extras": ExtrasConfig,
    "evaluation": EvaluationConfig,
    "search": SearchConfig,
}
# Recipe keys that are values, not sections.
TOP_LEVEL_KEYS = ("resume",)
# Never written to recipe.yaml, logs or model cards: a secret.
SECRET_TRAINING_KEYS = ("hub_token",)


@dataclass
class Recipe:
    data: DataConfig
    model: ModelConfig
    training: dict[str, Any]  # kwargs for TrainingArguments (training_args.build_training_arguments)
    early_stopping: EarlyStoppingConfig
    budget: BudgetConfig
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)  # EMA, layer-wise LR decay, flip TTA, diagnostics
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)  # the metrics
    search: SearchConfig = field(default_factory=SearchConfig)  # used by --search (vit_hf.search)
    vit_config: dict[str, Any] = field(default_factory=dict)  # ViTConfig overrides from `model:`
    resume: str = "auto"  # see RESUME_HELP
    source: str | None = None  # the YAML file it came from

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every vit_hf key with its value, and the training keys that were set."""
        model = dataclasses.asdict(self.model) | self.vit_config
        training = {k: v for k, v in self.training.items() if k not in SECRET_TRAINING_KEYS}
        return {
            "data": dataclasses.asdict(self.data),
            "model": model,
            "training": training,
            "early_stopping": dataclasses.asdict(self.early_stopping),
            "budget": dataclasses.asdict(self.budget),
            "extras": dataclasses.asdict(self.extras),
            "evaluation": dataclasses.asdict(self.evaluation),
            "resume": self.resume,
            # Only a recipe that defines a search carries the section (best_recipe.yaml does not).
            **({"search": dataclasses.asdict(self.search)} if self.search.space else {}),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def augment_keys() -> tuple[str, ...]:
    """The data keys that only shape training augmentation (a search trial may change them)."""
    return tuple(f.name for f in dataclasses.fields(DataConfig) if f.metadata.get("augment"))


@functools.cache
def vit_config_keys() -> dict[str, Any]:
    """ViTConfig's fields a recipe may set under `model:` (beside preset/pretrained), with their types.

    Read from transformers' configuration_vit.py source, not by importing it: importing any transformers
    configuration imports torch (seconds), and a recipe is checked before anything heavy loads. The
    annotations are strings there; tests compare the result with ViTConfig's own."""
    path = importlib.util.find_spec("transformers.models.vit.configuration_vit").origin
    tree = ast.parse(open(path).read())
    vit = next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == "ViTConfig")
    annotations = {node.target.id: ast.unparse(node.annotation) for node in vit.body
                   if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    return {name: _TYPES.get(text, Any) for name, text in annotations.items() if name not in NOT_MODEL_KEYS}


# The annotation texts of ViTConfig's fields, as types check_type understands.
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "float | int": float, "int | None": int | None,
          "int | list[int] | tuple[int, int]": int}
# ViTConfig fields that are not recipe keys under `model:`: the data section decides them.
NOT_MODEL_KEYS = {"image_size": "data.image_size", "num_channels": "images are decoded to RGB"}
