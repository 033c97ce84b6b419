"""Optimizer parameter groups: which parameters are weight-decayed, and layer-wise learning rates.

Details: docs/DESIGN.md, "Weight decay and layer-wise learning rates".
"""

from __future__ import annotations

import re
from typing import Any

import torch
from transformers.trainer_optimizer import is_optimizer_factory

from ..errors import RecipeError
from ..modeling.families import Family, blocks_of, family_of

# timm's rule (VisionTransformer.no_weight_decay(): the position table and the tokens put in front of the
# patches; Beit.no_weight_decay(): relative position bias tables) under transformers' names, in every family:
# CLS, DeiT's distillation token, BEiT's and DINOv2's mask token, DINOv2-with-registers' register tokens.
# Layer scales (BEiT lambda_1/lambda_2, DINOv2 layer_scale*.lambda1, timm ls*.gamma), norms and biases are 1-D,
# and 1-D parameters are never decayed.
NO_WEIGHT_DECAY = ("position_embeddings", "cls_token", "distillation_token", "mask_token", "register_tokens",
                   "relative_position_bias_table")


def decay_parameter_names(model: torch.nn.Module, trainer_decay_names: list[str]) -> list[str]:
    """The Trainer's weight-decayed parameters, less timm's exceptions: 1-D, NO_WEIGHT_DECAY, and what the
    model itself lists (a timm model's no_weight_decay())."""
    allowed = set(trainer_decay_names)
    family = family_of(model.config)
    listed = family.own_no_weight_decay(model) if family is not None else set()
    return [
        name
        for name, parameter in model.named_parameters()
        if name in allowed and parameter.ndim > 1 and name.rsplit(".", 1)[-1] not in NO_WEIGHT_DECAY
        and name not in listed
    ]


def layer_index(name: str, num_layers: int, family: Family) -> int:
    """0 for the embeddings, i + 1 for block i, num_layers + 1 for everything after the blocks (final norm,
    head; BEiT's shared relative position bias, as BEiT's own layer decay has it)."""
    if re.search(family.embeddings, name):
        return 0
    block = re.match(rf"{re.escape(family.blocks)}\.(\d+)\.", name)
    return int(block.group(1)) + 1 if block else num_layers + 1


def layer_decay_groups(
    model: torch.nn.Module, decay_names: set[str], weight_decay: float, learning_rate: float, layer_decay: float
) -> list[dict[str, Any]]:
    """One parameter group per (layer, decayed or not), each with its learning rate."""
    num_layers = len(blocks_of(model, "extras.layer_decay"))  # from the model: timm configs have no num_hidden_layers
    family = family_of(model.config)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # frozen (sincos2d position embeddings): not optimized at all
            continue
        layer, decayed = layer_index(name, num_layers, family), name in decay_names
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
