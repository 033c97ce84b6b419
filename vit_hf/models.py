"""The model: a ViT preset built from a ViTConfig, or a pretrained checkpoint with a new head."""

from __future__ import annotations

import logging
from typing import Any

import torch

from .config import ModelConfig

logger = logging.getLogger(__name__)

# Standard widths/depths/heads (Dosovitskiy et al. 2021; DeiT for Tiny/Small); MLP ratio 4.
PRESETS: dict[str, dict[str, int]] = {
    "vit-tiny": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768},
    "vit-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
    "vit-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
DEFAULT_IMAGE_SIZE = 224


def resolve_attention(cfg: ModelConfig) -> str:
    """'auto' -> sdpa on a GPU; eager on a CPU, where it is faster with bf16 autocast (DESIGN.md)."""
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    return "sdpa" if torch.cuda.is_available() else "eager"


def label_maps(label_names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(label_names),
        "id2label": {i: name for i, name in enumerate(label_names)},
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def build_model(cfg: ModelConfig, vit_config: dict[str, Any], label_names: list[str], image_size: int):
    """A ViTForImageClassification for `label_names` at `image_size`: from scratch or fine-tuned."""
    if cfg.pretrained:
        return load_pretrained(cfg, vit_config, label_names, image_size)
    return build_from_scratch(cfg, vit_config, label_names, image_size)


def build_from_scratch(cfg: ModelConfig, vit_config: dict[str, Any], label_names: list[str], image_size: int):
    from transformers import ViTConfig, ViTForImageClassification

    fields = PRESETS[cfg.preset] | vit_config
    config = ViTConfig(image_size=image_size, **fields, **label_maps(label_names))
    _check_geometry(config)
    config._attn_implementation = resolve_attention(cfg)
    return ViTForImageClassification(config)


def load_pretrained(cfg: ModelConfig, vit_config: dict[str, Any], label_names: list[str], image_size: int):
    """The checkpoint with a new head sized for the dataset (ignore_mismatched_sizes replaces the old one)."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(
        cfg.pretrained,
        ignore_mismatched_sizes=True,
        attn_implementation=resolve_attention(cfg),
        trust_remote_code=cfg.trust_remote_code,
        **vit_config,
        **label_maps(label_names),
    )
    if getattr(model.config, "image_size", image_size) != image_size:
        resize_position_embeddings(model, image_size)
    return model


def load_for_evaluation(cfg: ModelConfig):
    """The checkpoint as it is, head included."""
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(
        cfg.pretrained, attn_implementation=resolve_attention(cfg), trust_remote_code=cfg.trust_remote_code
    )


def _check_geometry(config) -> None:
    from .errors import RecipeError

    if config.image_size % config.patch_size:
        raise RecipeError(
            f"model.patch_size: {config.patch_size} does not divide data.image_size {config.image_size}; "
            f"choose a patch size that divides it (e.g. {_divisors(config.image_size)})"
        )
    if config.hidden_size % config.num_attention_heads:
        raise RecipeError(
            f"model.num_attention_heads: {config.num_attention_heads} does not divide hidden_size "
            f"{config.hidden_size}"
        )


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in (2, 4, 8, 14, 16, 32) if n % d == 0) or "1"


def resize_position_embeddings(model, image_size: int) -> None:
    """Bicubically resample a ViT's position embeddings to a new resolution, in place, config included.

    transformers can interpolate at every forward (`interpolate_pos_encoding=True`), but `pipeline`
    and `from_pretrained` users don't pass that flag; a checkpoint must carry embeddings of its size.
    """
    embeddings = getattr(model.base_model, "embeddings", None)
    patches = getattr(embeddings, "patch_embeddings", None)
    if embeddings is None or not hasattr(embeddings, "interpolate_pos_encoding") or patches is None:
        from .errors import RecipeError

        raise RecipeError(
            f"data.image_size: {image_size} differs from the checkpoint's {model.config.image_size} and "
            f"{type(model).__name__} has no ViT position embeddings to resize; use image_size "
            f"{model.config.image_size}"
        )
    grid = image_size // model.config.patch_size
    probe = torch.zeros(1, grid * grid + 1, model.config.hidden_size)
    with torch.no_grad():
        resized = embeddings.interpolate_pos_encoding(probe, image_size, image_size)
    embeddings.position_embeddings = torch.nn.Parameter(resized.contiguous())
    patches.image_size = (image_size, image_size)
    patches.num_patches = grid * grid
    embeddings.image_size = (image_size, image_size)
    logger.info("resized position embeddings from %s to %s px", model.config.image_size, image_size)
    model.config.image_size = image_size


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
