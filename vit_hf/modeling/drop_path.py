"""Stochastic depth (Huang et al. 2016) for transformers' ViT, in training only.

As timm's VisionTransformer (used by DeiT): each block's attention and MLP residual branches are
dropped per sample with a probability that grows linearly with depth, from 0 at the first block
to `rate` at the last, and kept branches are scaled by 1 / (1 - p). Forward hooks on the branch
modules do it, so the state dict and the saved model are plain ViT, and evaluation is untouched.
"""

from __future__ import annotations

import torch


class DropPath:
    """A forward hook that zeroes a branch's output for a random subset of the batch while training."""

    def __init__(self, probability: float):
        self.probability = probability

    def __call__(self, module: torch.nn.Module, inputs, output):
        if not module.training:
            return None  # None keeps the output as it is
        if isinstance(output, tuple):  # ViTAttention returns (output, attention weights)
            return (self.drop(output[0]), *output[1:])
        return self.drop(output)

    def drop(self, branch: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.probability
        mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.dim() - 1)).bernoulli_(keep)
        return branch * mask / keep

    def __repr__(self) -> str:
        return f"DropPath({self.probability:.3g})"


def add_stochastic_depth(model, rate: float) -> list[float]:
    """Hook DropPath into every block of a transformers ViT; returns the per-block rates."""
    if rate <= 0:
        return []
    layers = model.base_model.layers
    rates = torch.linspace(0, rate, len(layers)).tolist()  # timm: dpr = linspace(0, drop_path_rate, depth)
    for layer, probability in zip(layers, rates):
        if probability > 0:
            layer.attention.register_forward_hook(DropPath(probability))
            layer.mlp.register_forward_hook(DropPath(probability))
    return rates
