"""Batched augmentation on the training device, airbench style.

A batch arrives as uint8 `[B, 3, H, W]` (decoded, RGB, already at the training size) on the device
that trains (CPU or CUDA). Every op works on the whole batch at once, draws its per-sample random
parameters from a `torch.Generator` on that same device, and loops over nothing in Python, so one
batch costs a handful of kernel launches whatever B is.

Value scale: the ops take and return float32 on the 0-255 scale. The uint8 batch is converted once,
at the start of `BatchTransform`, and `normalize` divides by 255 at the end; 0-255 keeps uint8 and
float batches on one scale, so `normalize` accepts either. No op modifies its input in place.

RandAugment and TrivialAugment give each sample its own op: samples are grouped by op and each op runs
once on its group (a Python loop over the 14 ops, never over samples). Mixup and CutMix, which also
change the labels, are in mixing.py.

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


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """[B] (or [B, 1, 1, 1]) per-sample values, shaped to broadcast over [B, C, H, W]."""
    return values.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image by its factor ([B]): a blend towards black, as torchvision's adjust_brightness."""
    return (x * _per_sample(factor)).clamp_(0, MAX_VALUE)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image towards its mean grey by its factor ([B]), as torchvision's adjust_contrast."""
    return _blend(x, _grayscale(x).mean(dim=(-2, -1), keepdim=True), _per_sample(factor))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image towards its own greyscale by its factor ([B]): PIL's and torchvision's "color"."""
    return _blend(x, _grayscale(x), _per_sample(factor))


def color_jitter(x: torch.Tensor, strength: float, *, generator: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation, each factor uniform in [1 - s, 1 + s].

    As torchvision's ColorJitter(s, s, s, 0) but in a fixed order; values stay in [0, 255].
    """
    brightness, contrast, saturation = _uniform((3, x.shape[0]), 1 - strength, 1 + strength, x.device, generator)
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
    return _blend(x, smoothed, _per_sample(factor))


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
    return torch.where(x >= _per_sample(threshold), MAX_VALUE - x, x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` ([B], 1-8) bits of each value: PIL's ImageOps.posterize on the 0-255 scale."""
    step = 2.0 ** (8 - _per_sample(bits))
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


# --- RandAugment and TrivialAugment-Wide ------------------------------------------------------------
# The 14 ops of RandAugment (Cubuk et al. 2020) and TrivialAugment-Wide (Muller & Hutter 2021), as
# torchvision has them. Each sample gets one op and a strength in the op's own unit: shear factor,
# translation in pixels, rotation in degrees, solarize threshold below 255, posterize bits removed,
# enhance factor - 1. The geometric ops come first: they share one affine resampling per call.

GEOMETRIC_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")

def _identity(x: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    return x


_COLOR_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": _identity,
    "auto_contrast": lambda x, strength: auto_contrast(x),
    "equalize": lambda x, strength: equalize(x),
    "solarize": lambda x, strength: solarize(x, MAX_VALUE - strength),
    "posterize": lambda x, strength: posterize(x, 8 - strength.round()),
    "color": lambda x, strength: adjust_saturation(x, 1 + strength),
    "contrast": lambda x, strength: adjust_contrast(x, 1 + strength),
    "brightness": lambda x, strength: adjust_brightness(x, 1 + strength),
    "sharpness": lambda x, strength: adjust_sharpness(x, 1 + strength),
}

AUGMENT_OPS = GEOMETRIC_OPS + tuple(_COLOR_OPS)

# Ops that go both ways: their strength gets a random sign. The others have one direction.
_SIGNED_OPS = frozenset(GEOMETRIC_OPS + ("color", "contrast", "brightness", "sharpness"))

# RandAugment's magnitude scale: 10 is each op's maximum (the paper's and timm's; DeiT's rand-m9 is 9).
RAND_AUGMENT_MAX_MAGNITUDE = 10

# TrivialAugment-Wide draws the strength from 31 evenly spaced levels (torchvision's num_magnitude_bins).
_TRIVIAL_AUGMENT_LEVELS = 31


def _rand_augment_maxima(height: int, width: int) -> dict[str, float]:
    """Strength at magnitude 10: AutoAugment's ranges, kept by RandAugment (timm's values).

    Translation is 45% of the side (AutoAugment's 150 px of 331, timm's translate_pct); posterize
    goes down to 4 bits; solarize's threshold down to 0. Ops not listed have no strength.
    """
    enhance = 0.9  # factor 1 +- 0.9, timm's "increasing" enhance ops (DeiT's rand-m9-mstd0.5-inc1)
    return {
        "shear_x": 0.3, "shear_y": 0.3, "translate_x": 0.45 * width, "translate_y": 0.45 * height,
        "rotate": 30.0, "solarize": MAX_VALUE, "posterize": 4.0,
        "color": enhance, "contrast": enhance, "brightness": enhance, "sharpness": enhance,
    }


def _trivial_augment_maxima(height: int, width: int) -> dict[str, float]:
    """TrivialAugment-Wide's wider ranges (torchvision's TrivialAugmentWide): translation in absolute pixels."""
    enhance = 0.99
    return {
        "shear_x": 0.99, "shear_y": 0.99, "translate_x": 32.0, "translate_y": 32.0,
        "rotate": 135.0, "solarize": MAX_VALUE, "posterize": 6.0,
        "color": enhance, "contrast": enhance, "brightness": enhance, "sharpness": enhance,
    }


@functools.lru_cache(maxsize=64)
def _device_vector(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A 1-D float32 constant on `device`, made once (as _channel_values, no host-to-GPU copy per batch)."""
    return torch.tensor(values, dtype=torch.float32, device=device)


def _signed_strengths(
    op_index: torch.Tensor, level: torch.Tensor | float, maxima: dict[str, float], generator: torch.Generator
) -> torch.Tensor:
    """Per-sample strength: its op's maximum times `level` (in [0, 1]), negated half the time if signed."""
    device = op_index.device
    maximum = _device_vector(tuple(maxima.get(name, 0.0) for name in AUGMENT_OPS), device)[op_index]
    signed = _device_vector(tuple(float(name in _SIGNED_OPS) for name in AUGMENT_OPS), device)[op_index]
    negate = (_uniform(op_index.shape, 0, 1, device, generator) < 0.5) * signed
    return maximum * level * (1 - 2 * negate)


def _geometric_ops(x: torch.Tensor, strength: torch.Tensor, op_index: torch.Tensor) -> torch.Tensor:
    """Shear, translate or rotate each image (its GEOMETRIC_OPS[op_index]) by its strength, in one affine()."""

    def chosen(name: str) -> torch.Tensor:
        return torch.where(op_index == GEOMETRIC_OPS.index(name), strength, 0.0)

    angle = torch.deg2rad(chosen("rotate"))
    cos, sin = angle.cos(), angle.sin()
    # One op per sample: the others are 0 (or the identity), so their terms simply add. Shear is about
    # the centre, where PIL's is about the top-left corner, so that a shear does not also translate.
    matrix = torch.stack([cos, chosen("shear_x") - sin, sin + chosen("shear_y"), cos], dim=1).view(-1, 2, 2)
    shift = torch.stack([chosen("translate_x"), chosen("translate_y")], dim=1)
    return affine(x, matrix, shift)


def one_op_per_sample(
    x: torch.Tensor, op_index: torch.Tensor, strength: torch.Tensor, grouped: bool | None = None
) -> torch.Tensor:
    """Apply AUGMENT_OPS[op_index[i]] at strength[i] (in that op's unit, see above) to sample i.

    Two ways to the same result. `grouped` (the default on a CPU): samples are sorted by op so that each
    op runs once, on the rows that chose it, which costs about one op per sample but needs the group
    sizes on the host. Masked (the default on an accelerator): every op runs on the whole batch and each
    sample keeps its own op's output, which costs ~10 ops per sample but never reads the device, where a
    read would make the host wait for the GPU to drain (and a GPU has the arithmetic to spare). The
    geometric ops share one affine resampling either way.
    """
    if grouped is None:
        grouped = x.device.type == "cpu"
    return _grouped_ops(x, op_index, strength) if grouped else _masked_ops(x, op_index, strength)


def _grouped_ops(x: torch.Tensor, op_index: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    order = op_index.argsort()
    # The group sizes, read on the host: numpy(), as this path only runs on CPU tensors (sync_check.py).
    counts = torch.bincount(op_index, minlength=len(AUGMENT_OPS)).numpy().tolist()
    sizes = [sum(counts[: len(GEOMETRIC_OPS)]), *counts[len(GEOMETRIC_OPS) :]]
    groups = order.split(sizes)
    kernels = [functools.partial(_geometric_ops, op_index=op_index[groups[0]]), *_COLOR_OPS.values()]
    out = torch.empty_like(x)
    for kernel, rows in zip(kernels, groups):
        if len(rows):
            out[rows] = kernel(x[rows], strength[rows])
    return out


def _masked_ops(x: torch.Tensor, op_index: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    geometric = _per_sample(op_index < len(GEOMETRIC_OPS))
    out = torch.where(geometric, _geometric_ops(x, strength, op_index), x)
    for index, kernel in enumerate(_COLOR_OPS.values(), start=len(GEOMETRIC_OPS)):
        if kernel is not _identity:
            out = torch.where(_per_sample(op_index == index), kernel(x, strength), out)
    return out


def rand_augment(
    x: torch.Tensor, num_ops: int = 2, magnitude: float = 9, *, generator: torch.Generator
) -> torch.Tensor:
    """RandAugment (Cubuk et al. 2020): `num_ops` rounds, each giving every sample one of the 14 ops.

    Op uniform per sample and round; strength `magnitude` / 10 of the op's range (RAND_AUGMENT_MAX_MAGNITUDE
    is the scale: the paper's and timm's, where torchvision counts 0-30), with a random sign per sample.
    """
    maxima = _rand_augment_maxima(*x.shape[-2:])
    level = magnitude / RAND_AUGMENT_MAX_MAGNITUDE
    for _ in range(num_ops):
        op_index = torch.randint(len(AUGMENT_OPS), (x.shape[0],), device=x.device, generator=generator)
        x = one_op_per_sample(x, op_index, _signed_strengths(op_index, level, maxima, generator))
    return x


def trivial_augment(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugment-Wide (Muller & Hutter 2021): one op per sample, its strength uniform over 31 levels.

    No settings to tune, by design: op and level are uniform, the sign random, the ranges the wide ones.
    """
    batch = x.shape[0]
    op_index = torch.randint(len(AUGMENT_OPS), (batch,), device=x.device, generator=generator)
    steps = torch.randint(_TRIVIAL_AUGMENT_LEVELS, (batch,), device=x.device, generator=generator)
    level = steps / (_TRIVIAL_AUGMENT_LEVELS - 1)
    maxima = _trivial_augment_maxima(*x.shape[-2:])
    return one_op_per_sample(x, op_index, _signed_strengths(op_index, level, maxima, generator))


# --- random erasing ---------------------------------------------------------------------------------


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
    area = _uniform(tries, scale[0], scale[1], device, generator) * (height * width)
    aspect = _uniform(tries, math.log(ratio[0]), math.log(ratio[1]), device, generator).exp()
    box_h, box_w = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (box_h < height) & (box_w < width)
    first_fit = fits.int().argmax(dim=1, keepdim=True)
    found = fits.any(dim=1, keepdim=True)
    box_h = torch.where(found, box_h.gather(1, first_fit), 0.0)
    box_w = torch.where(found, box_w.gather(1, first_fit), 0.0)
    corner = _uniform((2, batch, 1), 0, 1, device, generator)
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
    erase = _uniform((batch, 1, 1), 0, 1, x.device, generator) < p
    noise = _uniform(x.shape, 0, MAX_VALUE, x.device, generator)
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
    """The recipe's training augmentation, ops that are off left out; output size = input size.

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
