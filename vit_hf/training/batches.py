"""Batches on the device: uint8 images in, the model's inputs out.

Training: augmentation (seeded per micro-batch), progressive resizing, Mixup/CutMix (soft targets);
evaluation: normalization. Then, for a conv stem on a GPU, the NHWC layout. VitTrainer hands every
batch through here (training_step, prediction_step); data-loader workers only gather or decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..augment.mixing import Mixing
from ..augment.resolution import ResolutionSchedule, resize_batch
from ..data.gpu_decode import GpuDecoding

BatchTransform = Callable[..., torch.Tensor]


@dataclass
class RunOptions:
    """What a run does to its batches and model beyond the Trainer (training.build makes it from a recipe)."""

    train_augment: BatchTransform | None = None  # uint8 batch, generator -> normalized float batch
    eval_transform: BatchTransform | None = None  # uint8 batch -> normalized float batch
    mixing: Mixing | None = None  # Mixup/CutMix of the augmented training batches: soft-target labels
    resolution: ResolutionSchedule | None = None  # progressive resizing of the training batches
    image_size: int | None = None  # the model's training and evaluation size; None: the batches' own
    layer_decay: float | None = None  # layer-wise learning-rate decay (optim.py); None = off
    eval_flip_tta: bool = False  # evaluate on the mean logits of each image and its mirror
    channels_last: bool = False  # NHWC batches, for a model whose convolutions are (build.use_channels_last)
    gpu_decode: GpuDecoding | None = None  # data.gpu_decode: batches of JPEG files, decoded on the device


class BatchPreparer:
    """Turns a loader's batch into the model's inputs, for training or for evaluation."""

    def __init__(self, options: RunOptions):
        self.options = options
        self._generator: torch.Generator | None = None
        self._step, self._micro_batch = -1, 0  # the micro-batch being augmented within its optimizer step

    def training(self, inputs: dict[str, Any], step: int, accumulation: int, seed: int, rank: int,
                 progress: float) -> dict[str, Any]:
        """A training batch, augmented with a seed of its own (see `seed_for`); `progress` in [0, 1] sets the
        progressive-resizing size."""
        pixels = inputs.get("pixel_values")
        if pixels is None or pixels.dtype != torch.uint8 or self.options.train_augment is None:
            return inputs
        batch_seed = self.seed_for(step, accumulation, seed, rank)
        full = self.options.image_size or pixels.shape[-1]  # the model's size
        size = self.options.resolution.size_at(progress) if self.options.resolution is not None else full
        # A random-resized crop resamples straight to a size at least the stored one: one interpolation. Below it
        # (progressive resizing's early, small sizes) it crops at the stored size, then _at_size shrinks the
        # batch antialiased, where a crop resampled straight down would alias.
        grow_to = size if size > pixels.shape[-1] else None
        generator = self._device_generator(pixels.device).manual_seed(batch_seed)
        augment = self.options.train_augment
        pixels = augment(pixels, generator) if grow_to is None else augment(pixels, generator, size=grow_to)
        inputs = {**inputs, **self._at_size(pixels, size, full)}
        if self.options.mixing is not None:
            # Mixing draws its per-batch numbers on the host, from the same seed: nothing is read from the device.
            mixed, soft_targets = self.options.mixing(inputs["pixel_values"], inputs["labels"],
                                                      np.random.default_rng(batch_seed))
            inputs = {**inputs, "pixel_values": mixed, "labels": soft_targets}
        return self._laid_out(inputs)

    def evaluation(self, inputs: dict[str, Any]) -> dict[str, Any]:
        pixels = inputs.get("pixel_values")
        if pixels is None or pixels.dtype != torch.uint8 or self.options.eval_transform is None:
            return inputs
        return self._laid_out({**inputs, "pixel_values": self.options.eval_transform(pixels)})

    def seed_for(self, step: int, accumulation: int, seed: int, rank: int) -> int:
        """A seed per (seed, micro-batch, rank): every micro-batch of an accumulated step is augmented
        differently, the same run the same way, and a resumed run replays it from its step."""
        self._micro_batch = self._micro_batch + 1 if step == self._step else 0
        self._step = step
        micro_batch = step * accumulation + self._micro_batch
        return ((seed * 1_000_003 + micro_batch) * 64 + rank) % (2**63)

    def _device_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
        return self._generator

    def _at_size(self, pixels: torch.Tensor, size: int, full: int) -> dict[str, Any]:
        """The batch at `size` (data.storage_size may differ from it); the ViT interpolates its position
        embeddings while the size is not the model's, `full` (augment/resolution.py)."""
        pixels = resize_batch(pixels, size)
        if size == full:
            return {"pixel_values": pixels}
        return {"pixel_values": pixels, "interpolate_pos_encoding": True}

    def _laid_out(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if not self.options.channels_last:
            return inputs
        return {**inputs, "pixel_values": inputs["pixel_values"].contiguous(memory_format=torch.channels_last)}
