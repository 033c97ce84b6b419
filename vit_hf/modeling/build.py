"""The model: a ViT preset built from a ViTConfig, or a pretrained checkpoint with a new head.

The `model:` options (vit_hf.modeling) are applied here: conv stem and GAP head pick vit_hf's class,
sincos2d position embeddings are filled and frozen, stochastic depth is hooked in for training.
"""

from __future__ import annotations

import logging
from typing import Any

import transformers
from transformers import AutoConfig, AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from ..errors import RecipeError
from ..recipe.schema import PRESETS, ModelConfig
from .configuration_vit_hf import VitHfConfig
from .drop_path import add_stochastic_depth
from .families import KNOWN, Family, family_of, resize_position_information
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
    """The checkpoint with a head for the dataset's labels and position information for image_size.

    The head is new unless the checkpoint's labels are the dataset's, in the same order: a head of the same
    size for other labels would otherwise be kept (ignore_mismatched_sizes only replaces a head whose size
    differs). Which class loads, how the head is made and how positions resize: the family's (families.py)."""
    checkpoint = AutoConfig.from_pretrained(cfg.pretrained, trust_remote_code=cfg.trust_remote_code)
    family = family_of(checkpoint)
    model = fine_tune_class(family).from_pretrained(
        cfg.pretrained,
        ignore_mismatched_sizes=True,
        attn_implementation=resolve_attention(cfg),
        trust_remote_code=cfg.trust_remote_code,
        **own_drop_path_off(family, cfg),
        **vit_config,
        **label_maps(label_names),
    )
    check_matches_checkpoint(cfg, model.config)
    if checkpoint_labels(checkpoint) != label_names:
        replace_head(model, family, len(label_names))
    resize_position_information(model, image_size)
    if has_fixed_posemb(model.config):
        use_sincos2d(model)  # frozen again, and recomputed for the grid rather than interpolated
    add_stochastic_depth(model, cfg.drop_path_rate)
    return model


def fine_tune_class(family: Family | None):
    if family is None or family.fine_tune_class is None:
        return AutoModelForImageClassification
    return getattr(transformers, family.fine_tune_class)


def own_drop_path_off(family: Family | None, cfg: ModelConfig) -> dict[str, float]:
    """model.drop_path_rate, when set, is the only stochastic depth: a family's own (BEiT's, DINOv2's
    config.drop_path_rate) is turned off, not stacked under vit_hf's."""
    return {"drop_path_rate": 0.0} if family is not None and family.native_drop_path and cfg.drop_path_rate > 0 else {}


def checkpoint_labels(config) -> list[str]:
    return [config.id2label[i] for i in range(config.num_labels)] if config.id2label else []


def replace_head(model, family: Family | None, num_labels: int) -> None:
    if family is None:
        logger.warning(
            "model.pretrained: vit_hf does not know %s's head (it knows %s); it is new only if its size changed",
            model.config.model_type, KNOWN,
        )
        return
    family.new_head(model, num_labels)


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


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
