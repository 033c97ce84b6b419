"""The preprocessing a model expects: its resolution and normalization, from the recipe, else the
pretrained checkpoint's image processor (or config), else the defaults. One answer for training and
evaluation alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import AutoConfig, AutoImageProcessor

from ..recipe.schema import DEFAULT_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, Recipe


@dataclass
class Preprocessing:
    image_size: int
    crop_pct: float
    mean: list[float]
    std: list[float]


def resolve_preprocessing(recipe: Recipe) -> Preprocessing:
    """Resolution and normalization: the recipe's, else the pretrained model's, else the defaults."""
    pretrained = pretrained_preprocessing(recipe.model.pretrained) if recipe.model.pretrained else {}
    data = recipe.data
    return Preprocessing(
        image_size=data.image_size or pretrained.get("image_size") or DEFAULT_IMAGE_SIZE,
        crop_pct=data.crop_pct,
        mean=list(data.mean or pretrained.get("mean") or IMAGENET_MEAN),
        std=list(data.std or pretrained.get("std") or IMAGENET_STD),
    )


def pretrained_preprocessing(name: str) -> dict[str, Any]:
    """image_size/mean/std from a checkpoint's image processor (or its config when it has none)."""
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        processor = None
    found = processor_preprocessing(processor) if processor is not None else {}
    if not found.get("image_size"):
        found["image_size"] = getattr(AutoConfig.from_pretrained(name), "image_size", None)
    return found


def processor_preprocessing(processor) -> dict[str, Any]:
    """image_size/mean/std from either layout an image processor has.

    timm's (TimmWrapperImageProcessor): `data_config`, timm's resolved data config, with input_size
    (channels, height, width), mean and std. transformers' (ViT, DeiT, BEiT, Bit for DINOv2, ...):
    image_mean, image_std, and the size the model sees: crop_size when it center-crops (DeiT, DINOv2:
    resize the shorter side, then crop), else size (height/width, or shortest_edge)."""
    timm = getattr(processor, "data_config", None)
    if timm is not None:
        return {"image_size": timm["input_size"][-1], "mean": list(timm["mean"]), "std": list(timm["std"])}
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = crop or getattr(processor, "size", None) or {}
    return {
        "mean": getattr(processor, "image_mean", None),
        "std": getattr(processor, "image_std", None),
        "image_size": size.get("height") or size.get("shortest_edge"),
    }
