"""Optimizer parameter groups: which parameters are weight-decayed, and layer-wise learning rates.

Details: docs/DESIGN.md, "Weight decay and layer-wise learning rates".
"""

from __future__ import annotations

import re
from typing import Any

import torch
from transformers.trainer_optimizer import is_optimizer_factory

from ..errors import RecipeError

# timm's VisionTransformer.no_weight_decay(), under transformers' ViT names.
NO_WEIGHT_DECAY = ("position_embeddings", "cls_token", "mask_token")
_BLOCK_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")  # vit.layers.3. (5.x) or encoder.layer.3. (4.x)


def decay_parameter_names(model: torch.nn.Module, trainer_decay_names: list[str]) -> list[str]:
    """The Trainer's weight-decayed parameters, less timm's exceptions (1-D, position embeddings, CLS)."""
    allowed = set(trainer_decay_names)
    return [
        name
        for name, parameter in model.named_parameters()
        if name in allowed and parameter.ndim > 1 and name.rsplit(".", 1)[-1] not in NO_WEIGHT_DECAY
    ]


def layer_index(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for block i, num_layers + 1 for everything after the blocks."""
    if re.search(r"(?:^|\.)embeddings\.", name):
        return 0
    block = _BLOCK_INDEX.search(name)
    return int(block.group(1)) + 1 if block else num_layers + 1


def layer_decay_groups(
    model: torch.nn.Module, decay_names: set[str], weight_decay: float, learning_rate: float, layer_decay: float
) -> list[dict[str, Any]]:
    """One parameter group per (layer, decayed or not), each with its learning rate."""
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # frozen (sincos2d position embeddings): not optimized at all
            continue
        layer, decayed = layer_index(name, num_layers), name in decay_names
        group = groups.setdefault((layer, decayed), {
            "params": [],
            "weight_decay": weight_decay if decayed else 0.0,
            "lr": learning_rate * layer_decay ** (num_layers + 1 - layer),
            "layer": layer,  # for logs and tests; optimizers keep extra keys as they are
        })
        group["params"].append(parameter)
    # Head first: the Trainer logs the first group's rate as "learning_rate", which then stays the
    # recipe's learning_rate rather than the embeddings' decayed one.
    return [groups[key] for key in sorted(groups, reverse=True)]


def layer_decay_optimizer(trainer, model: torch.nn.Module, layer_decay: float) -> torch.optim.Optimizer:
    """The optimizer TrainingArguments name (training.optim and its arguments), over layer-wise groups."""
    args = trainer.args
    optimizer_cls, kwargs = trainer.optimizer_cls_and_kwargs or trainer.get_optimizer_cls_and_kwargs(args, model)
    if is_optimizer_factory(optimizer_cls) or {"params", "model", "optimizer_dict"} & kwargs.keys():
        raise RecipeError(
            f"extras.layer_decay: training.optim {args.optim!r} builds its own parameter groups, so it cannot take "
            "layer-wise learning rates; use an optimizer such as adamw_torch, or extras.layer_decay: null"
        )
    decay_names = set(trainer.get_decay_parameter_names(model))
    learning_rate = kwargs.get("lr", args.learning_rate)
    groups = layer_decay_groups(model, decay_names, args.weight_decay, learning_rate, layer_decay)
    return optimizer_cls(groups, **kwargs)
