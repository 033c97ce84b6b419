"""Batched image ops on the training device, airbench style: every op works on the whole batch at once,
draws its per-sample random parameters from a `torch.Generator` on that device, and loops over nothing
in Python, so a batch costs a handful of kernel launches whatever its size.

Value scale: ops take and return float32 on the 0-255 scale (the uint8 batch is converted once, by
transform.BatchTransform, and `normalize` divides by 255 at the end; 0-255 keeps uint8 and float
batches on one scale, so `normalize` takes either); no op changes its input in place. The automatic
policies built from these ops are in policies.py; Mixup/CutMix, which also change the labels, in mixing.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

MAX_VALUE = 255.0  # top of the value scale the ops work on (see the module docstring)


# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# RandomResizedCrop redraws a crop that does not fit in the image up to 10 times (torchvision's count).
_CROP_TRIES = 10


def uniform(shape, low: float, high: float, device: torch.device, generator: torch.Generator) -> torch.Tensor:
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
    area = uniform(tries, scale[0], scale[1], device, generator)
    crop_ratio = uniform(tries, math.log(ratio[0]), math.log(ratio[1]), device, generator).exp()
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
    centre_x = (1 - crop_w) * uniform(batch, -1, 1, x.device, generator)
    centre_y = (1 - crop_h) * uniform(batch, -1, 1, x.device, generator)
    mirror = torch.where(uniform(batch, 0, 1, x.device, generator) < hflip_p, -1.0, 1.0)
    zero = torch.zeros_like(crop_w)
    theta = torch.stack([crop_w * mirror, zero, centre_x, zero, crop_h, centre_y], dim=1).view(batch, 2, 3)
    # align_corners=False: +-1 are the image's outer pixel edges, so the full box (w=h=1) maps each
    # output pixel centre onto an input pixel centre and reproduces the image. Every crop lies inside
    # the image; "border" only keeps rounding at its edges from blending in zeros.
    grid = F.affine_grid(theta, [batch, channels, *out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def pad_crop(x: torch.Tensor, pad: int, *, generator: torch.Generator) -> torch.Tensor:
    """Reflection-pad by `pad` pixels, then crop each image back to H x W at a random integer offset.

    Every H x W window of the padded batch is a view (unfold); each image takes its own by one batched
    index: one gather over the batch, not a loop over samples (and ~2x faster than gathering rows, then
    columns)."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    top, left = torch.randint(0, 2 * pad + 1, (2, batch), device=x.device, generator=generator)
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # [B, C, tops, lefts, H, W], views
    return windows[torch.arange(batch, device=x.device), :, top, left]


def hflip(x: torch.Tensor, p: float, *, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability `p`."""
    flip = uniform(x.shape[0], 0, 1, x.device, generator) < p
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


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """[B] (or [B, 1, 1, 1]) per-sample values, shaped to broadcast over [B, C, H, W]."""
    return values.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image by its factor ([B]): a blend towards black, as torchvision's adjust_brightness."""
    return (x * per_sample(factor)).clamp_(0, MAX_VALUE)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image towards its mean grey by its factor ([B]), as torchvision's adjust_contrast."""
    return _blend(x, _grayscale(x).mean(dim=(-2, -1), keepdim=True), per_sample(factor))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image towards its own greyscale by its factor ([B]): PIL's and torchvision's "color"."""
    return _blend(x, _grayscale(x), per_sample(factor))


def color_jitter(x: torch.Tensor, strength: float, *, generator: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation, each factor uniform in [1 - s, 1 + s].

    As torchvision's ColorJitter(s, s, s, 0) but in a fixed order; values stay in [0, 255].
    """
    brightness, contrast, saturation = uniform((3, x.shape[0]), 1 - strength, 1 + strength, x.device, generator)
    return adjust_saturation(adjust_contrast(adjust_brightness(x, brightness), contrast), saturation)


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with a smoothed copy by its factor ([B]): < 1 blurs, > 1 sharpens.

    As PIL's ImageEnhance.Sharpness and torchvision's adjust_sharpness: the smoothed copy is a 3x3
    filter [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 inside the image and the image itself on its border.
    That filter is (9 x the 3x3 mean + 4 x the centre) / 13; avg_pool2d is twice as fast as a
    depthwise conv2d on CPU.
    """
    smoothed = x.clone()
    smoothed[..., 1:-1, 1:-1] = (9 * F.avg_pool2d(x, 3, stride=1) + 4 * x[..., 1:-1, 1:-1]) / 13
    return _blend(x, smoothed, per_sample(factor))


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to span [0, 255]; a flat channel stays as it is (torchvision's)."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    stretched = ((x - low) * (MAX_VALUE / (high - low).clamp(min=1e-6))).clamp_(0, MAX_VALUE)
    return torch.where(high > low, stretched, x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram-equalize each channel of each image over the 256 integer levels, as PIL's ImageOps.equalize.

    Batched torchvision's equalize: every channel's histogram in one scatter_add, then its lookup table
    (cumulative histogram / step, step = pixels outside the top level / 255) in one gather. A channel
    with step 0 (nearly one level) is returned as it is, as there.
    """
    batch, channels, height, width = x.shape
    levels = x.round().clamp(0, MAX_VALUE).long().view(batch * channels, height * width)
    ones = torch.ones_like(levels, dtype=torch.float32)
    histogram = torch.zeros(batch * channels, 256, device=x.device).scatter_add_(1, levels, ones)
    top_level = (histogram.gt(0) * torch.arange(256, device=x.device)).amax(dim=1, keepdim=True)
    step = torch.div(height * width - histogram.gather(1, top_level), 255, rounding_mode="floor")
    cumulative = histogram.cumsum(1) + torch.div(step, 2, rounding_mode="floor")
    table = torch.div(cumulative, step.clamp(min=1), rounding_mode="floor")
    table = F.pad(table, (1, 0))[:, :-1].clamp(0, MAX_VALUE)  # level i maps to the count below it
    equalized = table.gather(1, levels).view_as(x)
    return torch.where(step.view(batch, channels, 1, 1) > 0, equalized, x)


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert (255 - v) every value at or above its image's threshold ([B]), as PIL's ImageOps.solarize."""
    return torch.where(x >= per_sample(threshold), MAX_VALUE - x, x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` ([B], 1-8) bits of each value: PIL's ImageOps.posterize on the 0-255 scale."""
    step = 2.0 ** (8 - per_sample(bits))
    return (x / step).floor() * step


def affine(x: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Warp each image by its own affine map about its centre: one batched affine_grid + grid_sample.

    Output pixel p (pixels from the image centre, x right, y down) reads the input at
    matrix @ (p - shift): `shift` ([B, 2]) moves the content by that many pixels, and `matrix` ([B, 2, 2])
    = [[cos a, -sin a], [sin a, cos a]] turns it by a counter-clockwise. Bilinear (timm draws bilinear or
    bicubic, torchvision uses nearest); what comes from outside the image is black, as torchvision's
    RandAugment and TrivialAugmentWide (fill=None).
    """
    batch, channels, height, width = x.shape
    offset = -(matrix @ shift.unsqueeze(-1)).squeeze(-1)
    # affine_grid works in [-1, 1] per axis: u = 2 X / W, v = 2 Y / H (align_corners=False).
    theta = torch.stack(
        [
            matrix[:, 0, 0], matrix[:, 0, 1] * (height / width), offset[:, 0] * (2 / width),
            matrix[:, 1, 0] * (width / height), matrix[:, 1, 1], offset[:, 1] * (2 / height),
        ],
        dim=1,
    ).view(batch, 2, 3)
    grid = F.affine_grid(theta, [batch, channels, height, width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sample_erase_boxes(
    batch: int,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    device: torch.device,
    generator: torch.Generator,
) -> tuple[torch.Tensor, ...]:
    """Per-sample box (top, left, box height, box width) in pixels, each [B, 1, 1]; 0 x 0 when none fits.

    timm's RandomErasing draws: area uniform in `scale` (fraction of the image), aspect log-uniform in
    `ratio`, sides rounded, up to 10 tries for one strictly inside the image (all made at once here, the
    first that fits kept), then a corner uniform over the positions where the box fits.
    """
    tries = (batch, _CROP_TRIES)
    area = uniform(tries, scale[0], scale[1], device, generator) * (height * width)
    aspect = uniform(tries, math.log(ratio[0]), math.log(ratio[1]), device, generator).exp()
    box_h, box_w = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (box_h < height) & (box_w < width)
    first_fit = fits.int().argmax(dim=1, keepdim=True)
    found = fits.any(dim=1, keepdim=True)
    box_h = torch.where(found, box_h.gather(1, first_fit), 0.0)
    box_w = torch.where(found, box_w.gather(1, first_fit), 0.0)
    corner = uniform((2, batch, 1), 0, 1, device, generator)
    top = (corner[0] * (height - box_h + 1)).floor().clamp(max=height - box_h)
    left = (corner[1] * (width - box_w + 1)).floor().clamp(max=width - box_w)
    return tuple(t.view(batch, 1, 1) for t in (top, left, box_h, box_w))


def random_erasing(
    x: torch.Tensor,
    p: float,
    scale: Sequence[float] = (0.02, 1 / 3),
    ratio: Sequence[float] = (0.3, 3.3),
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """With probability `p`, replace a random box of each image by noise (Zhong et al. 2020, timm's defaults).

    timm erases after normalization with N(0, 1) per pixel ("pixel" mode): noise around the data's mean at
    its spread. Erasing commutes with the per-pixel normalization, so here it is the last op before it, on
    the 0-255 scale, filled with uniform noise in [0, 255] per pixel and channel: it stays in the range
    every op keeps, needs no normalization statistics, and is close to timm's after normalizing (mean 0.5,
    std 0.29 on the 0-1 scale; ImageNet's are 0.45 and 0.23). A constant mean fill would be "const" mode.
    """
    batch, _, height, width = x.shape
    top, left, box_h, box_w = _sample_erase_boxes(batch, height, width, scale, ratio, x.device, generator)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    erase = uniform((batch, 1, 1), 0, 1, x.device, generator) < p
    noise = uniform(x.shape, 0, MAX_VALUE, x.device, generator)
    return torch.where((inside & erase).unsqueeze(1), noise, x)


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
