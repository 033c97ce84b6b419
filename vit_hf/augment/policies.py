"""RandAugment and TrivialAugment-Wide, batched: each sample gets its own op and strength.

The 14 ops of RandAugment (Cubuk et al. 2020) and TrivialAugment-Wide (Muller & Hutter 2021), as
torchvision has them, built from ops.py. Each sample gets one op and a strength in the op's own unit:
shear factor, translation in pixels, rotation in degrees, solarize threshold below 255, posterize bits
removed, enhance factor - 1. The geometric ops come first: they share one affine resampling per call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .ops import (
    MAX_VALUE,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_sharpness,
    affine,
    auto_contrast,
    equalize,
    per_sample,
    posterize,
    solarize,
    uniform,
)

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
    negate = (uniform(op_index.shape, 0, 1, device, generator) < 0.5) * signed
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
    geometric = per_sample(op_index < len(GEOMETRIC_OPS))
    out = torch.where(geometric, _geometric_ops(x, strength, op_index), x)
    for index, kernel in enumerate(_COLOR_OPS.values(), start=len(GEOMETRIC_OPS)):
        if kernel is not _identity:
            out = torch.where(per_sample(op_index == index), kernel(x, strength), out)
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
