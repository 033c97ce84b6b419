"""Progressive resizing: train at a lower resolution early and at full resolution at the end.

A ViT step costs about (tokens)^1..2: at 3/4 of the side it sees 56% of the tokens, so early epochs
run ~2x faster, and the network spends its late, low-learning-rate phase at the resolution it is
evaluated at (FFCV's ImageNet recipes; Irandoust et al. 2022, "Training a Vision Transformer from
scratch in less than 24 hours with 1 GPU"). The position embeddings stay at full resolution in the
checkpoint and are interpolated in the forward pass while the batch is smaller; evaluation always
runs at full size. The size moves in a few planned steps (data.progressive_sizes): each distinct
input shape is a graph of its own for torch.compile, compiled once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ResolutionSchedule:
    full: int
    start: int
    ramp: tuple[float, float]  # training progress where the size starts growing, and reaches `full`
    multiple: int  # sizes are multiples of the patch size, so the token grid stays whole
    stages: int = 4  # distinct sizes, start and full included: each one a compiled graph under torch_compile

    @property
    def sizes(self) -> tuple[int, ...]:
        """The planned sizes, smallest first: `stages` evenly spaced from start to full, on patch multiples."""
        steps = max(1, self.stages - 1)
        sizes = {self._on_grid(self.start + i * (self.full - self.start) / steps) for i in range(steps + 1)}
        return tuple(sorted(sizes))

    def size_at(self, progress: float) -> int:
        """The planned size nearest to the linear ramp's at `progress` (the smaller one on a tie)."""
        low, high = self.ramp
        fraction = 0.0 if progress <= low else 1.0 if progress >= high else (progress - low) / (high - low)
        target = self.start + fraction * (self.full - self.start)
        return min(self.sizes, key=lambda size: (abs(size - target), size))

    def _on_grid(self, size: float) -> int:
        return min(self.full, max(self.multiple, int(round(size / self.multiple)) * self.multiple))

    def __repr__(self) -> str:
        low, high = self.ramp
        sizes = ", ".join(map(str, self.sizes))
        return f"ResolutionSchedule({self.start}px until {low:.0%} of training, {self.full}px from {high:.0%}; {sizes})"


def build_resolution_schedule(start_size: int | None, ramp, image_size: int, patch_size: int, stages: int = 4):
    """None when progressive resizing is off (data.progressive_start_size unset or >= image_size)."""
    if start_size is None or start_size >= image_size:
        return None
    return ResolutionSchedule(full=image_size, start=start_size, ramp=(float(ramp[0]), float(ramp[1])),
                              multiple=patch_size, stages=stages)


def resize_batch(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """A normalized float batch [B, 3, H, W] at size x size, bilinear with antialias=True: antialiased when it
    shrinks (progressive resizing's small sizes); when it grows (a pad or no crop from a data.storage_size below
    the training size) it is plain bilinear's triangle filter (its support only widens for a shrink)."""
    if pixels.shape[-1] == size and pixels.shape[-2] == size:
        return pixels
    return F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
