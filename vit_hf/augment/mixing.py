"""Mixup and CutMix with soft targets, on the training device, as timm's `Mixup` (its default mode "batch").

One mixing weight lambda per batch; each image is mixed with its mirror in the batch (`x.flip(0)`);
CutMix's lambda is corrected to the area of the box actually pasted (the box is clipped at the image's
edges); label smoothing is applied to the one-hot targets before they are mixed, so the loss is plain
cross-entropy against the soft targets (`soft_target_cross_entropy`, timm's SoftTargetCrossEntropy).

Mixing runs on the normalized batch, after `BatchTransform`: normalization is affine per channel, so a
blend or a pasted box is the same before or after it.

    mixing = build_mixing(cfg.data, num_labels, label_smoothing)   # None when both alphas are 0
    pixels, soft_targets = mixing(pixels, labels, rng)             # rng: numpy; soft_targets: float32 [B, num_labels]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..recipe.schema import DataConfig

# (top, bottom, left, right) in pixels, bottom and right exclusive.
Box = tuple[int, int, int, int]


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """float32 [B, num_classes]: 1 - smoothing + smoothing / C on the label, smoothing / C elsewhere (timm's)."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1 - smoothing + off)


def _cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> Box:
    """timm's rand_bbox: sides sqrt(1 - lam) of the image's, centred uniformly, clipped to the image."""
    cut = math.sqrt(1 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
    return top, bottom, left, right


def _draw_batch_mix(
    height: int,
    width: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    prob: float,
    switch_prob: float,
    rng: np.random.Generator,
) -> tuple[float, Box | None]:
    """lambda and the CutMix box (None for Mixup or no mixing), as timm's Mixup._params_per_batch."""
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or rng.random() >= prob:
        return 1.0, None
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if not use_cutmix:
        return lam, None
    box = top, bottom, left, right = _cutmix_box(height, width, lam, rng)
    # timm's correct_lam: the clipped box can be smaller than 1 - lam of the image; the targets follow the pixels.
    return 1 - (bottom - top) * (right - left) / (height * width), box


def _mix_pixels(x: torch.Tensor, lam: float, box: Box | None) -> torch.Tensor:
    """CutMix: the partner's pixels pasted into `box`; Mixup: lam * x + (1 - lam) * partner."""
    if box is not None:
        top, bottom, left, right = box
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x[..., top:bottom, left:right].flip(0)
        return mixed
    return torch.lerp(x.flip(0), x, lam) if lam < 1 else x


def mix_batch(
    x: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.0,
    *,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix the batch with its mirror: (x mixed, soft targets float32 [B, num_classes]).

    `rng` draws the few per-batch numbers on the host, as timm does with NumPy: lambda and the box are
    Python numbers, so the box is a plain slice and nothing is read back from the device (a GPU sync).

    With probability `prob` the batch is mixed: by CutMix with probability `switch_prob` when both alphas
    are > 0 (else by whichever is on), lambda ~ Beta(alpha, alpha). Targets are
    lam * smoothed(labels) + (1 - lam) * smoothed(labels of the partner), with lambda corrected to the
    pasted area for CutMix. An unmixed batch still gets smoothed one-hot targets. An odd batch is fine:
    its middle sample is its own partner (timm asserts an even batch only for its other modes).
    """
    lam, box = _draw_batch_mix(*x.shape[-2:], mixup_alpha, cutmix_alpha, prob, switch_prob, rng)
    targets = smooth_one_hot(labels, num_classes, label_smoothing)
    return _mix_pixels(x, lam, box), torch.lerp(targets.flip(0), targets, lam)


def soft_target_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy against soft targets, -sum_c t_c log softmax(logits)_c, averaged over the batch.

    timm's SoftTargetCrossEntropy. Given `num_items_in_batch` (the Trainer's count of samples in the whole
    accumulated batch), the micro-batch's sum is divided by it instead, as transformers' own losses do, so
    that gradient accumulation averages over every sample.
    """
    per_sample = -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
    if num_items_in_batch is None:
        return per_sample.mean()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(per_sample.device)
    return per_sample.sum() / num_items_in_batch


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Mixup/CutMix of a normalized training batch, with its settings bound; prints as them."""

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.0

    def __call__(
        self, pixels: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return mix_batch(pixels, labels, **dataclasses.asdict(self), rng=rng)


def build_mixing(cfg: DataConfig, num_labels: int, label_smoothing: float = 0.0) -> Mixing | None:
    """The recipe's Mixup/CutMix, or None when both alphas are 0 (then the Trainer smooths hard labels itself)."""
    if cfg.mixup_alpha <= 0 and cfg.cutmix_alpha <= 0:
        return None
    return Mixing(
        num_classes=num_labels,
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        prob=cfg.mix_prob,
        switch_prob=cfg.mix_switch_prob,
        label_smoothing=label_smoothing,
    )
