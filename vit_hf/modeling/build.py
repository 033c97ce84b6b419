"""The model: a ViT preset built from a ViTConfig, or a pretrained checkpoint with a new head.

The `model:` options (vit_hf.modeling) are applied here: conv stem and GAP head pick vit_hf's class,
sincos2d position embeddings are filled and frozen, stochastic depth is hooked in for training.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from ..errors import RecipeError
from ..recipe.schema import PRESETS, ModelConfig
from .configuration_vit_hf import VitHfConfig
from .drop_path import add_stochastic_depth
from .modeling_vit_hf import VitHfForImageClassification
from .posemb import SINCOS2D, has_fixed_posemb, use_sincos2d

logger = logging.getLogger(__name__)



def resolve_attention(cfg: ModelConfig) -> str:
    """'auto' -> sdpa. On a 2-core AVX-512 CPU in fp32 (how vit_hf trains on CPUs without AMX),
    sdpa trained ViT-Tiny-width models at 32 px 2-14% faster than eager and evaluated 5-20% faster;
    eager was reported faster only under CPU bf16 autocast. Set the key to choose."""
    return "sdpa" if cfg.attn_implementation == "auto" else cfg.attn_implementation


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
    config_class, model_class = model_classes(cfg)
    fields = PRESETS[cfg.preset] | vit_config | inference_options(cfg)
    config = config_class(image_size=image_size, **fields, **label_maps(label_names))
    _check_geometry(config)
    config._attn_implementation = resolve_attention(cfg)
    model = model_class(config)
    if cfg.posemb == SINCOS2D:
        use_sincos2d(model)
    add_stochastic_depth(model, cfg.drop_path_rate)
    return model


def model_classes(cfg: ModelConfig) -> tuple[type, type]:
    """Plain ViT unless an option changes inference (conv stem, GAP head): then vit_hf's own class,
    which pipeline/AutoModel load (vit_hf.modeling says how)."""
    if inference_options(cfg):
        return VitHfConfig, VitHfForImageClassification
    return ViTConfig, ViTForImageClassification


def inference_options(cfg: ModelConfig) -> dict[str, str]:
    if cfg.stem == "patch" and cfg.pool == "cls":
        return {}
    return {"stem": cfg.stem, "pool": cfg.pool}


def load_pretrained(cfg: ModelConfig, vit_config: dict[str, Any], label_names: list[str], image_size: int):
    """The checkpoint with a new head sized for the dataset (ignore_mismatched_sizes replaces the old one)."""
    model = AutoModelForImageClassification.from_pretrained(
        cfg.pretrained,
        ignore_mismatched_sizes=True,
        attn_implementation=resolve_attention(cfg),
        trust_remote_code=cfg.trust_remote_code,
        **vit_config,
        **label_maps(label_names),
    )
    check_matches_checkpoint(cfg, model.config)
    if getattr(model.config, "image_size", image_size) != image_size:
        resize_position_embeddings(model, image_size)
    if has_fixed_posemb(model.config):
        use_sincos2d(model)  # frozen again, and recomputed for the grid rather than interpolated
    add_stochastic_depth(model, cfg.drop_path_rate)
    return model


def load_for_evaluation(cfg: ModelConfig):
    """The checkpoint as it is, head included."""
    model = AutoModelForImageClassification.from_pretrained(
        cfg.pretrained, attn_implementation=resolve_attention(cfg), trust_remote_code=cfg.trust_remote_code
    )
    check_matches_checkpoint(cfg, model.config)
    return model


# What a checkpoint records about options it was built with (none: plain ViT).
ARCHITECTURE_DEFAULTS = {"stem": "patch", "pool": "cls", "posemb": "learned"}


def check_matches_checkpoint(cfg: ModelConfig, config) -> None:
    """model.stem/pool/posemb, when set, must be what the checkpoint was trained with: its weights
    (a patch projection, a CLS head, learned position embeddings) cannot take another. Unset, the
    checkpoint's own are kept."""
    for key, default in ARCHITECTURE_DEFAULTS.items():
        wanted, trained = getattr(cfg, key), getattr(config, key, default)
        if wanted not in (default, trained):
            raise RecipeError(
                f"model.{key}: {wanted!r}, but model.pretrained {cfg.pretrained!r} was trained with {key} "
                f"{trained!r} and its weights only fit that; drop model.{key} to keep the checkpoint's, or train "
                f"{key} {wanted!r} from scratch with model.preset"
            )


def _check_geometry(config) -> None:
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
