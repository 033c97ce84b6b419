"""Stochastic depth (Huang et al. 2016) for transformers' ViT, in training only.

As timm's VisionTransformer (used by DeiT): each block's attention and MLP residual branches are
dropped per sample with a probability that grows linearly with depth, from 0 at the first block
to `rate` at the last, and kept branches are scaled by 1 / (1 - p). Forward hooks on the branch
modules do it, so the state dict and the saved model are unchanged, and evaluation is untouched. Which
modules are the blocks and their branches is the family's (families.py): the same hooks serve every family.
"""

from __future__ import annotations

import torch

from .families import blocks_of, family_of


class DropPath:
    """A forward hook that zeroes a branch's output for a random subset of the batch while training."""

    def __init__(self, probability: float):
        self.probability = probability

    def __call__(self, module: torch.nn.Module, inputs, output):
        if not module.training:
            return None  # None keeps the output as it is
        if isinstance(output, tuple):  # transformers' attention modules return (output, attention weights)
            return (self.drop(output[0]), *output[1:])
        return self.drop(output)

    def drop(self, branch: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.probability
        mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.dim() - 1)).bernoulli_(keep)
        return branch * mask / keep

    def __repr__(self) -> str:
        return f"DropPath({self.probability:.3g})"


def add_stochastic_depth(model, rate: float) -> list[float]:
    """Hook DropPath into both residual branches of every block; returns the per-block rates.

    A branch's output is dropped before the layer scale that BEiT, DINOv2 and timm apply to it: a scale
    is linear, so dropping before it or after it is the same."""
    if rate <= 0:
        return []
    blocks, branches = blocks_of(model, "model.drop_path_rate"), family_of(model.config).branches
    rates = torch.linspace(0, rate, len(blocks)).tolist()  # timm: dpr = linspace(0, drop_path_rate, depth)
    for block, probability in zip(blocks, rates):
        if probability > 0:
            for branch in branches:
                block.get_submodule(branch).register_forward_hook(DropPath(probability))
    return rates
