"""The recipe's training augmentation as one callable: uint8 batch -> random ops in order -> normalized float.

    augment = build_train_augment(recipe.data, mean, std)   # logged: print(augment)
    pixel_values = augment(images_uint8, generator)         # float32 [B, 3, H, W], normalized

Order, as timm's create_transform: crop and flip, RandAugment or TrivialAugment, colour jitter, then
random erasing last, on the finished image; normalization at the end. Evaluation: normalization only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..recipe.schema import DataConfig
from .ops import color_jitter, hflip, normalize, pad_crop, random_erasing, random_resized_crop
from .policies import rand_augment, trivial_augment


class _Step:
    """One random op with its settings bound; prints as the call that it makes."""

    def __init__(self, op: Callable[..., torch.Tensor], **settings):
        self.op = op
        self.settings = settings

    def __call__(self, x: torch.Tensor, generator: torch.Generator, **call_settings) -> torch.Tensor:
        return self.op(x, **self.settings, **call_settings, generator=generator)

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.settings.items())
        return f"{self.op.__name__}({settings})"


class BatchTransform:
    """uint8 batch [B, 3, H, W] -> its random ops in order -> normalized float32 [B, 3, H, W]."""

    def __init__(self, steps: Sequence[_Step], mean: Sequence[float], std: Sequence[float]):
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each (RGB), got mean={mean!r}, std={std!r}")
        self.steps = list(steps)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 size: int | None = None) -> torch.Tensor:
        """`size`: the side a random-resized crop resamples to (None: the input's); other crops keep the input's
        size, and the caller resizes."""
        if images.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image batch, got {images.dtype}")
        if self.steps and generator is None:
            raise ValueError(f"{self!r} is random: pass a torch.Generator on {images.device}")
        x = images.float()  # the one uint8 -> float conversion; the ops work on the 0-255 scale
        for step in self.steps:
            x = step(x, generator, size=size) if step.op is random_resized_crop else step(x, generator)
        return normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        lines = [*map(repr, self.steps), f"normalize(mean={self.mean!r}, std={self.std!r})"]
        return "BatchTransform(\n" + "".join(f"  {line},\n" for line in lines) + ")"


def _crop_step(cfg: DataConfig) -> _Step | None:
    """The recipe's training crop, with the flip folded into it when it is a random resized crop."""
    if cfg.crop == "random_resized":
        scale, ratio = tuple(cfg.crop_scale), tuple(cfg.crop_ratio)
        return _Step(random_resized_crop, scale=scale, ratio=ratio, hflip_p=cfg.hflip)
    if cfg.crop == "pad":
        return _Step(pad_crop, pad=cfg.pad) if cfg.pad > 0 else None
    if cfg.crop == "none":
        return None
    raise ValueError(f"data.crop: {cfg.crop!r} is not one of 'random_resized', 'pad', 'none'")


def _auto_augment_step(cfg: DataConfig) -> _Step | None:
    """The recipe's automatic augmentation policy, if any."""
    if cfg.auto_augment == "randaugment":
        return _Step(rand_augment, num_ops=cfg.randaugment_ops, magnitude=cfg.randaugment_magnitude)
    if cfg.auto_augment == "trivialaugment":
        return _Step(trivial_augment)
    if cfg.auto_augment == "none":
        return None
    raise ValueError(f"data.auto_augment: {cfg.auto_augment!r} is not one of 'randaugment', 'trivialaugment', 'none'")


def build_train_augment(cfg: DataConfig, mean: Sequence[float], std: Sequence[float]) -> BatchTransform:
    """The recipe's training augmentation, ops that are off left out; output size = input size, or the `size`
    a call asks a random-resized crop for.

    Order, as timm's create_transform: crop and flip, RandAugment or TrivialAugment, colour jitter, then
    random erasing last, on the finished image (timm erases after normalization; see random_erasing).
    Call it as `augment(images_uint8, generator)`, with the generator on the images' device.
    """
    flip_alone = cfg.hflip > 0 and cfg.crop != "random_resized"  # random_resized flips inside its affine map
    steps = [
        _crop_step(cfg),
        _Step(hflip, p=cfg.hflip) if flip_alone else None,
        _auto_augment_step(cfg),
        _Step(color_jitter, strength=cfg.color_jitter) if cfg.color_jitter > 0 else None,
        _Step(random_erasing, p=cfg.random_erasing) if cfg.random_erasing > 0 else None,
    ]
    return BatchTransform([step for step in steps if step is not None], mean, std)


def build_eval_transform(mean: Sequence[float], std: Sequence[float]) -> BatchTransform:
    """Evaluation: normalization only. Call it as `transform(images_uint8)`."""
    return BatchTransform([], mean, std)
