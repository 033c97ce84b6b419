"""The rule `budget.plan: auto` follows: which shape, batch, learning rate and regularization a budget buys.

Shape. A budget buys each shape E epochs (the seconds left for training x the images/s measured on this
machine / the train-set size). What a shape reaches in E epochs is read off a curve fitted per shape to
benchmarks/budget_sweep.py's table (CIFAR-10, holdout accuracy, benchmarks/RESULTS.md):

    error(E) = floor + scale * E ** -DECAY

so a cheap shape wins when few epochs fit and a larger one when many do. Epochs, not seconds, are what
transfers between machines: a GPU gives every shape more of them. Beyond the epochs the sweep measured the
curve is an extrapolation, credited up to EXTRAPOLATION times the epochs behind it; shapes with no measured
curve are never chosen (the log says so).

Regularization grows with the epochs (AugReg, Steiner et al. 2022: the longer the schedule, the more
augmentation pays): see REGIMES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .candidates import Shape

# Published points a CPU sweep cannot reach, fitted with the sweep's cells (shape name -> (epochs, accuracy)):
# what a GPU's hundreds of epochs buy. Lee, Lee & Song 2021 (arXiv 2112.13492), their baseline ViT with DeiT's
# CIFAR regularization, 100 epochs: 93.58% (CIFAR-10 test; recipes/cifar10_tiny.yaml is that recipe).
ANCHORS: dict[str, list[tuple[float, float]]] = {"vit-9x192/4": [(100.0, 0.9358)]}

# Fitted by benchmarks/budget_sweep.py --fit to its table and ANCHORS (benchmarks/budget_sweep.json, RESULTS.md,
# "Budget planner"): shape name -> (floor, scale, the most epochs behind the curve); DECAY is shared by all
# shapes (one exponent for 11 cells: per-shape exponents would fit 3 points with 3 numbers).
DECAY = 0.28
CURVES: dict[str, tuple[float, float, float]] = {
    "vit-6x128/8": (0.0570, 0.6321, 14.82),  # 3 cells, 2.65-14.82 epochs, worst miss 0.009
    "hybrid-6x128/8": (0.0, 0.5538, 13.19),  # 3 cells, 2.09-13.19 epochs, worst miss 0.021
    "vit-9x192/4": (0.0, 0.5175, 100.0),  # 2 cells (0.2, 0.79 epochs) + Lee et al.'s 100; worst miss 0.114
    "vit-6x128/4": (0.1945, 0.4296, 3.38),  # 3 cells, 0.5-3.38 epochs, worst miss 0.022
}
# A curve is credited with at most this many times the epochs behind it: a floor fitted to runs of 15 epochs
# says little about 1,000 (a 6 x 128 ViT of 16 tokens does not reach 94%, as the unbounded curve would say).
EXTRAPOLATION = 2.0


def predicted_accuracy(shape: Shape, epochs: float) -> float | None:
    """Holdout accuracy the fitted curve gives `shape` after `epochs` on CIFAR-10; None without a curve."""
    if shape.name not in CURVES or epochs <= 0:
        return None
    floor, scale, measured = CURVES[shape.name]
    return max(0.0, 1.0 - floor - scale * min(epochs, EXTRAPOLATION * measured) ** -DECAY)


def fit_curve(points: list[tuple[float, float]], decay: float = DECAY) -> tuple[float, float]:
    """Least squares of error = floor + scale * E^-decay over (epochs, accuracy) points, floor >= 0 (an error
    rate): linear in (floor, scale) for a fixed decay."""
    xs = [e ** -decay for e, _ in points]
    ys = [1.0 - a for _, a in points]
    n, mean_x, mean_y = len(points), sum(xs) / len(xs), sum(ys) / len(ys)
    var_x = sum((x - mean_x) ** 2 for x in xs)
    scale = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var_x if n > 1 and var_x > 0 else 0.0
    floor = mean_y - scale * mean_x
    if floor < 0:  # the best line through the points extrapolates past 100%: fit through a zero floor
        floor, scale = 0.0, sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return floor, scale


def fit_decay(by_shape: dict[str, list[tuple[float, float]]]) -> float:
    """The shared decay with the least squared error over every shape's curve (a grid: 0.1 .. 1.5)."""
    def residual(decay: float) -> float:
        total = 0.0
        for points in by_shape.values():
            floor, scale = fit_curve(points, decay)
            total += sum((1.0 - a - floor - scale * e ** -decay) ** 2 for e, a in points)
        return total
    return min((d / 50 for d in range(5, 76)), key=residual)


def fit_curves(cells: list[tuple[str, float, float]]) -> tuple[float, dict[str, tuple[float, float, float]]]:
    """(DECAY, CURVES) from sweep cells (shape, epochs, accuracy) and ANCHORS: what this module holds."""
    by_shape: dict[str, list[tuple[float, float]]] = {}
    for name, epochs, accuracy in cells:
        by_shape.setdefault(name, []).append((epochs, accuracy))
    for name, points in ANCHORS.items():  # published long runs: the epochs a CPU cannot reach
        if name in by_shape:
            by_shape[name] += points
    fitted = {name: points for name, points in by_shape.items() if len(points) >= 2}
    decay = fit_decay(fitted)
    return decay, {name: (*fit_curve(points, decay), max(e for e, _ in points)) for name, points in fitted.items()}


@dataclass(frozen=True)
class Regime:
    """Regularization for a range of epochs. 32-px pad-crop keys; larger images take a random-resized crop."""

    name: str
    min_epochs: float
    pad: int
    auto_augment: str  # data.auto_augment: "none" or a policy
    mixup_alpha: float
    cutmix_alpha: float
    random_erasing: float
    drop_path_rate: float
    label_smoothing: float = 0.1

    def data_keys(self, image_size: int) -> dict:
        crop = {"crop": "pad", "pad": self.pad} if image_size <= 64 else {"crop": "random_resized"}
        return {**crop, "hflip": 0.5, "auto_augment": self.auto_augment, "mixup_alpha": self.mixup_alpha,
                "cutmix_alpha": self.cutmix_alpha, "random_erasing": self.random_erasing}


# Light: measured best at ~12 epochs on CIFAR-10 (recipes/cifar10_cpu_10m.yaml; RESULTS.md: pad 2 beat pad 4,
# 0.7447 vs 0.7291 in 600 s; label smoothing 0.1 beat none). Strong: DeiT's set as CIFAR ViTs train it for
# 100-300 epochs (Lee et al. 2021, 93.6% with ViT 9x192/4 in 100 epochs; CCT, Hassani et al. 2021;
# recipes/cifar10_tiny.yaml). Medium sits between them, for the epochs neither measured.
REGIMES = (
    Regime("light", 0, pad=2, auto_augment="none", mixup_alpha=0.0, cutmix_alpha=0.0, random_erasing=0.0,
           drop_path_rate=0.0),
    Regime("medium", 25, pad=4, auto_augment="trivialaugment", mixup_alpha=0.2, cutmix_alpha=0.0,
           random_erasing=0.1, drop_path_rate=0.05),
    Regime("strong", 100, pad=4, auto_augment="trivialaugment", mixup_alpha=0.8, cutmix_alpha=1.0,
           random_erasing=0.25, drop_path_rate=0.1),
)


def regime_for(epochs: float) -> Regime:
    return [r for r in REGIMES if epochs >= r.min_epochs][-1]


# Batch and learning rate: AdamW at 1e-3 with batch 256 measured best on the CPU at 3-12 epochs (RESULTS.md:
# 0.6128 vs 0.5967 at batch 128 and 0.5317 at 64, 180 s); GPU recipes keep 1e-3 at 512, where a small ViT
# needs the larger batch to keep the device busy. Warmup: 5% of the budget, as every shipped recipe.
LEARNING_RATE, WARMUP_SHARE = 1.0e-3, 0.05
FAST_MACHINE_IMAGES_PER_SECOND = 10_000  # above this (a GPU), batch 512: ~20 steps/s at 512 keeps it fed


def batch_size_for(images_per_second: float) -> int:
    return 512 if images_per_second >= FAST_MACHINE_IMAGES_PER_SECOND else 256


def epochs_for(train_seconds: float, images_per_second: float, train_images: int) -> float:
    return train_seconds * images_per_second / max(1, train_images)


def best(scored: list[tuple[Shape, float | None]]) -> Shape | None:
    """The shape with the highest predicted accuracy; ties (within 0.2 points) go to the cheaper shape."""
    ranked = [(s, a) for s, a in scored if a is not None and not math.isnan(a)]
    if not ranked:
        return None
    top = max(a for _, a in ranked)
    return next(s for s, a in ranked if a >= top - 0.002)
