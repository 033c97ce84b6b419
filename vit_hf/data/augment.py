"""Batched augmentation on the training device, airbench style.

A batch arrives as uint8 `[B, 3, H, W]` (decoded, RGB, already at the training size) on the device
that trains (CPU or CUDA). Every op works on the whole batch at once, draws its per-sample random
parameters from a `torch.Generator` on that same device, and loops over nothing in Python, so one
batch costs a handful of kernel launches whatever B is.

Value scale: the ops take and return float32 on the 0-255 scale. The uint8 batch is converted once,
at the start of `BatchTransform`, and `normalize` divides by 255 at the end; 0-255 keeps uint8 and
float batches on one scale, so `normalize` accepts either. No op modifies its input in place.

    augment = build_train_augment(cfg.data, mean, std)   # logged: print(augment)
    pixel_values = augment(images_uint8, generator)       # float32 [B, 3, H, W], normalized
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from vit_hf.config import DataConfig

MAX_VALUE = 255.0  # top of the value scale the ops work on (see the module docstring)

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# RandomResizedCrop redraws a crop that does not fit in the image up to 10 times (torchvision's count).
_CROP_TRIES = 10


def _uniform(shape, low: float, high: float, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """float32 samples, uniform in [low, high), drawn on `device` from `generator`."""
    return torch.empty(shape, device=device).uniform_(low, high, generator=generator)


def _sample_crop_size(
    n: int,
    aspect: float,
    scale: Sequence[float],
    ratio: Sequence[float],
    device: torch.device,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample crop width and height, as fractions of the image's width and height.

    As torchvision's RandomResizedCrop: area uniform in `scale` (fraction of the image), aspect ratio
    log-uniform in `ratio`, redrawn while the crop does not fit. Here all the draws are made at once
    and each sample keeps its first that fits. When none of them fits (rare) the first is clamped to
    the image, where torchvision falls back to a centre crop. `aspect` is the image's height / width.
    """
    tries = (n, _CROP_TRIES)
    area = _uniform(tries, scale[0], scale[1], device, generator)
    crop_ratio = _uniform(tries, math.log(ratio[0]), math.log(ratio[1]), device, generator).exp()
    # crop width = sqrt(area_px * ratio) pixels, height = sqrt(area_px / ratio), area_px = area * H * W
    width = (area * crop_ratio * aspect).sqrt()
    height = (area / crop_ratio / aspect).sqrt()
    fits = (width <= 1) & (height <= 1)
    first_fit = fits.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum: the first fit
    width = width.gather(1, first_fit).squeeze(1).clamp(max=1)
    height = height.gather(1, first_fit).squeeze(1).clamp(max=1)
    return width, height


def random_resized_crop(
    x: torch.Tensor,
    size: int | None = None,
    scale: Sequence[float] = (0.35, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip_p: float = 0.0,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """Crop a random area/aspect box from each image and resize it to `size` x `size` (None: keep H x W).

    All crops are one affine map per sample, resampled by a single batched `affine_grid` +
    `grid_sample` (bilinear): no per-sample Python loop and no per-sample resize, and it runs on any
    device. A horizontal flip is free in that map (a negative x scale), so `hflip_p` mirrors each crop
    with that probability instead of a separate `hflip` pass over the batch.
    Bilinear without antialiasing is right when the crop is no larger than the output, as when the
    output keeps the input size; shrinking a large crop to a much smaller `size` would alias.
    """
    batch, channels, height, width = x.shape
    out_size = (height, width) if size is None else (size, size)
    crop_w, crop_h = _sample_crop_size(batch, height / width, scale, ratio, x.device, generator)
    # In grid coordinates the image spans [-1, 1]: a crop of width w can centre anywhere in +-(1 - w).
    centre_x = (1 - crop_w) * _uniform(batch, -1, 1, x.device, generator)
    centre_y = (1 - crop_h) * _uniform(batch, -1, 1, x.device, generator)
    mirror = torch.where(_uniform(batch, 0, 1, x.device, generator) < hflip_p, -1.0, 1.0)
    zero = torch.zeros_like(crop_w)
    theta = torch.stack([crop_w * mirror, zero, centre_x, zero, crop_h, centre_y], dim=1).view(batch, 2, 3)
    # align_corners=False: +-1 are the image's outer pixel edges, so the full box (w=h=1) maps each
    # output pixel centre onto an input pixel centre and reproduces the image. Every crop lies inside
    # the image; "border" only keeps rounding at its edges from blending in zeros.
    grid = F.affine_grid(theta, [batch, channels, *out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def pad_crop(x: torch.Tensor, pad: int, *, generator: torch.Generator) -> torch.Tensor:
    """Reflection-pad by `pad` pixels, then crop each image back to H x W at a random integer offset.

    The crop is two batched gathers (rows, then columns, at per-sample offsets), not a loop over samples.
    """
    batch, channels, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    top, left = torch.randint(0, 2 * pad + 1, (2, batch, 1), device=x.device, generator=generator)
    rows = (top + torch.arange(height, device=x.device)).view(batch, 1, height, 1)
    cols = (left + torch.arange(width, device=x.device)).view(batch, 1, 1, width)
    padded_rows = padded.gather(2, rows.expand(batch, channels, height, width + 2 * pad))
    return padded_rows.gather(3, cols.expand(batch, channels, height, width))


def hflip(x: torch.Tensor, p: float, *, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability `p`."""
    flip = _uniform(x.shape[0], 0, 1, x.device, generator) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB -> [B, 1, H, W] luma."""
    red, green, blue = x.unbind(1)
    return (_LUMA_WEIGHTS[0] * red + _LUMA_WEIGHTS[1] * green + _LUMA_WEIGHTS[2] * blue).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to the value range, as torchvision's _blend.

    `torch.lerp` does it in one pass over the batch, and returns x exactly when factor is 1.
    """
    return torch.lerp(other, x, factor).clamp_(0, MAX_VALUE)


def color_jitter(x: torch.Tensor, strength: float, *, generator: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation, each factor uniform in [1 - s, 1 + s].

    As torchvision's ColorJitter(s, s, s, 0) but in a fixed order; values stay in [0, 255].
    """
    factors = _uniform((3, x.shape[0], 1, 1, 1), 1 - strength, 1 + strength, x.device, generator)
    brightness, contrast, saturation = factors.unbind(0)
    x = (x * brightness).clamp_(0, MAX_VALUE)  # a blend towards black
    x = _blend(x, _grayscale(x).mean(dim=(-2, -1), keepdim=True), contrast)  # towards the mean grey
    return _blend(x, _grayscale(x), saturation)  # towards the image's own greyscale


@functools.lru_cache(maxsize=16)
def _channel_values(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """[1, C, 1, 1] float32 on `device`, made once: a host-to-GPU copy per batch would stall the stream."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as float32; x is uint8 or float on the 0-255 scale.

    `mean` and `std` are on the 0-1 scale (image-processor convention), one value per channel.
    """
    mean_t = _channel_values(tuple(map(float, mean)), x.device)
    std_t = _channel_values(tuple(map(float, std)), x.device)
    return (x.float() / MAX_VALUE - mean_t) / std_t


class _Step:
    """One random op with its settings bound; prints as the call that it makes."""

    def __init__(self, op: Callable[..., torch.Tensor], **settings):
        self.op = op
        self.settings = settings

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.op(x, **self.settings, generator=generator)

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

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image batch, got {images.dtype}")
        if self.steps and generator is None:
            raise ValueError(f"{self!r} is random: pass a torch.Generator on {images.device}")
        x = images.float()  # the one uint8 -> float conversion; the ops work on the 0-255 scale
        for step in self.steps:
            x = step(x, generator)
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


def build_train_augment(cfg: DataConfig, mean: Sequence[float], std: Sequence[float]) -> BatchTransform:
    """The recipe's training augmentation, ops that are off left out; output size = input size.

    Call it as `augment(images_uint8, generator)`, with the generator on the images' device.
    """
    crop = _crop_step(cfg)
    steps = [crop] if crop is not None else []
    if cfg.hflip > 0 and cfg.crop != "random_resized":  # random_resized flips inside its affine map
        steps.append(_Step(hflip, p=cfg.hflip))
    if cfg.color_jitter > 0:
        steps.append(_Step(color_jitter, strength=cfg.color_jitter))
    return BatchTransform(steps, mean, std)


def build_eval_transform(mean: Sequence[float], std: Sequence[float]) -> BatchTransform:
    """Evaluation: normalization only. Call it as `transform(images_uint8)`."""
    return BatchTransform([], mean, std)
