"""What vit_hf needs to know about each ViT family it fine-tunes: one table, `FAMILIES`.

    family  config.model_type  blocks                position information          prefix tokens in its table
    ViT     vit, vit_hf        vit.layers            absolute                      CLS
    DeiT    deit               deit.layers           absolute                      CLS, distillation
    BEiT    beit               beit.layers           absolute and/or relative bias CLS
    DINOv2  dinov2             dinov2.encoder.layer  absolute                      CLS
    timm    timm_wrapper       timm_model.blocks     timm's pos_embed              timm's (CLS, registers)

Names are transformers 5.24's live parameter names (not the saved ones) and timm 1.0's, which
TimmWrapperForImageClassification keeps under `timm_model`. Details: docs/DESIGN.md, "ViT families".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import RecipeError
from .preprocessing import Preprocessing

logger = logging.getLogger(__name__)


# Position information ----------------------------------------------------------------------------------
#
# Every family's saved model carries the tables of the size it was trained at, so that `pipeline` and
# `from_pretrained` (which pass no interpolate flag) load it as it is. Each table is resampled the way the
# family's own forward resamples it for another size, so the resized model computes at the new size what
# the checkpoint computed there, and only the stored size changes.


def resize_absolute(model, image_size: int) -> None:
    """A transformers family's learned table, through its own `interpolate_pos_encoding` (bicubic; DINOv2's
    in float32), prefix tokens (CLS, DeiT's distillation token) kept as they are.

    ViT and DeiT need it: without the flag their forward rejects another size. BEiT and DINOv2 interpolate
    at every forward anyway; resampled once, their saved table and config.image_size say the trained size,
    and a step no longer pays for the interpolation."""
    embeddings, grid = model.base_model.embeddings, image_size // model.config.patch_size
    table = embeddings.position_embeddings
    prefix = table.shape[1] - embeddings.patch_embeddings.num_patches
    probe = table.new_zeros(1, prefix + grid * grid, table.shape[-1])  # only its length is read
    with torch.no_grad():
        resized = embeddings.interpolate_pos_encoding(probe, image_size, image_size)
    embeddings.position_embeddings = nn.Parameter(resized.contiguous(), requires_grad=table.requires_grad)
    record_grid(model, image_size)


def record_grid(model, image_size: int) -> None:
    """The embeddings' record of their input size, which ViT's forward checks (its embeddings' image_size)."""
    embeddings, grid = model.base_model.embeddings, image_size // model.config.patch_size
    embeddings.patch_embeddings.image_size = (image_size, image_size)
    embeddings.patch_embeddings.num_patches = grid * grid
    if hasattr(embeddings, "image_size"):
        embeddings.image_size = (image_size, image_size)


def resize_relative_bias(bias, grid: int) -> None:
    """One BEiT relative position bias table for a grid x grid window, resampled by BeitRelativePositionBias's
    own forward (bilinear, the 3 CLS entries kept), which does it at every call for a window other than the
    table's. The table is read back through the index that forward gathers with: every entry appears in it."""
    window = (grid, grid)
    index = bias.generate_relative_position_index(window).flatten()
    entries = (2 * grid - 1) ** 2 + 3
    with torch.no_grad():
        gathered = bias(window)[0]  # [heads, tokens, tokens]
        table = gathered.new_empty(entries, gathered.shape[0])
        table[index] = gathered.flatten(1).T
    trainable = bias.relative_position_bias_table.requires_grad
    bias.relative_position_bias_table = nn.Parameter(table, requires_grad=trainable)
    bias.window_size, bias.num_relative_distance = window, entries


def resize_beit(model, image_size: int) -> None:
    """BEiT: its absolute table when it has one (use_absolute_position_embeddings), and every relative
    position bias table (use_relative_position_bias: one per block; use_shared_relative_position_bias: one)."""
    from transformers.models.beit.modeling_beit import BeitRelativePositionBias

    if model.base_model.embeddings.position_embeddings is not None:
        resize_absolute(model, image_size)
    else:
        record_grid(model, image_size)
    for module in model.modules():
        if isinstance(module, BeitRelativePositionBias):
            resize_relative_bias(module, image_size // model.config.patch_size)


def resize_timm(model, image_size: int) -> None:
    """timm's own `set_input_size` (its pos_embed resampled by timm's resample_abs_pos_embed: bicubic with
    antialiasing, prefix tokens kept), and config.model_args' img_size, with which TimmWrapper builds the
    timm model again when the saved model loads."""
    timm_model = model.timm_model
    if not hasattr(timm_model, "set_input_size"):
        raise RecipeError(
            f"data.image_size: {image_size} differs from the checkpoint's {timm_size(model)}, and timm's "
            f"{model.config.architecture} has no set_input_size to resize its position embeddings; use data.image_size "
            f"{timm_size(model)}, or a timm version whose {type(timm_model).__name__} has set_input_size"
        )
    timm_model.set_input_size(img_size=(image_size, image_size))
    model.config.model_args = {**(model.config.model_args or {}), "img_size": image_size}


def config_size(model) -> int | tuple | None:
    return model.config.image_size


def timm_size(model) -> int | None:
    """The input size timm's patch embedding was built for; None for a model without one (nothing to resize)."""
    patch_embed = getattr(model.timm_model, "patch_embed", None)
    if patch_embed is None:
        return None
    height, width = patch_embed.img_size
    return height if height == width else (height, width)


def config_patch(model) -> int:
    return model.config.patch_size


def timm_patch(model) -> int:
    return model.timm_model.patch_embed.patch_size[0]


# Heads -------------------------------------------------------------------------------------------------


def new_classifier(model, num_labels: int) -> None:
    """transformers' *ForImageClassification head, one nn.Linear `classifier`, made again for num_labels and
    initialized with the model's own scheme: initialize_weights() fills only what no checkpoint filled."""
    old = model.classifier
    model.classifier = nn.Linear(old.in_features, num_labels, device=old.weight.device, dtype=old.weight.dtype)
    model.initialize_weights()


def new_timm_head(model, num_labels: int) -> None:
    """timm's own reset_classifier, then TimmWrapper's initialization of the new head (as for a missing one).

    The config's label_names too: TimmWrapperConfig keeps the checkpoint's as an attribute, and its to_dict
    writes id2label's names only with setdefault, so the saved config.json would name the checkpoint's labels."""
    model.timm_model.reset_classifier(num_labels)
    model.initialize_weights()
    model.config.label_names = [model.config.id2label[i] for i in range(num_labels)]


# Weight decay ------------------------------------------------------------------------------------------


def no_own_list(model) -> set[str]:
    return set()


def timm_no_weight_decay(model) -> set[str]:
    """timm's own list (VisionTransformer: pos_embed, cls_token, reg_token, dist_token), under timm_model."""
    listed = getattr(model.timm_model, "no_weight_decay", None)
    return {f"timm_model.{name}" for name in (listed() if listed else ())}


# Preprocessing the saved model carries -----------------------------------------------------------------


def processor_file_only(config, prep: Preprocessing) -> None:
    """The family's pipeline reads the saved preprocessor_config.json: nothing goes into config.json."""


def timm_pretrained_cfg(config, prep: Preprocessing) -> None:
    """timm keeps its preprocessing in config.json's pretrained_cfg, and transformers' AutoImageProcessor reads
    it from there (TimmWrapperImageProcessor) for a local timm checkpoint, ignoring preprocessor_config.json.

    vit_hf resizes the shorter side to round(size / crop_pct), timm's eval transform to floor(size / crop_pct):
    the crop_pct written makes timm's floor land on vit_hf's size."""
    resized = round(prep.image_size / prep.crop_pct)
    config.pretrained_cfg = {
        **(getattr(config, "pretrained_cfg", None) or {}),
        "input_size": [3, prep.image_size, prep.image_size],
        "mean": list(prep.mean),
        "std": list(prep.std),
        "crop_pct": prep.image_size / (resized + 0.5),
        "crop_mode": "center",
        "interpolation": "bicubic",
    }


# The table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    blocks: str  # the ModuleList of transformer blocks: layer-wise lr decay's depth, stochastic depth's hooks
    embeddings: str  # a regex on parameter names: what comes before the first block (layer-wise decay's layer 0)
    branches: tuple[str, str]  # each block's attention and MLP submodules, the residual branches drop path drops
    image_size: Callable[[Any], int | tuple | None]  # the size the model's position information is for
    patch_size: Callable[[Any], int]
    resize: Callable[[Any, int], None]
    new_head: Callable[[Any, int], None]
    own_no_weight_decay: Callable[[Any], set[str]]  # what the model itself lists, beyond optim.NO_WEIGHT_DECAY
    record_preprocessing: Callable[[Any, Preprocessing], None]  # into the config, where the family's pipeline reads it
    fine_tune_class: str | None = None  # the transformers class trained, where AutoModel's choice cannot train
    native_drop_path: bool = False  # config.drop_path_rate builds the family's own stochastic depth
    takes_interpolate_flag: bool = True  # forward(interpolate_pos_encoding=True), which progressive resizing passes


_TRANSFORMERS = dict(
    embeddings=r"^\w+\.embeddings\.", branches=("attention", "mlp"), image_size=config_size, patch_size=config_patch,
    resize=resize_absolute, new_head=new_classifier, own_no_weight_decay=no_own_list,
    record_preprocessing=processor_file_only,
)

FAMILIES = (
    Family("ViT", ("vit", "vit_hf"), blocks="vit.layers", **_TRANSFORMERS),
    # Distilled DeiT checkpoints are DeiTForImageClassificationWithTeacher, which AutoModel picks from their
    # `architectures`: inference only (its forward takes no labels). They fine-tune as DeiTForImageClassification,
    # which keeps the distillation token (and its position) and drops both of the teacher class's heads.
    Family("DeiT", ("deit",), blocks="deit.layers", fine_tune_class="DeiTForImageClassification", **_TRANSFORMERS),
    Family("BEiT", ("beit",), blocks="beit.layers", native_drop_path=True, **_TRANSFORMERS | {"resize": resize_beit}),
    Family("DINOv2", ("dinov2",), blocks="dinov2.encoder.layer", native_drop_path=True, **_TRANSFORMERS),
    Family(
        "timm", ("timm_wrapper",), blocks="timm_model.blocks",
        # timm's VisionTransformer.group_matcher: its stem group, layer 0 of timm's own layer decay
        embeddings=r"^timm_model\.(cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre)\b",
        branches=("attn", "mlp"), image_size=timm_size, patch_size=timm_patch, resize=resize_timm,
        new_head=new_timm_head, own_no_weight_decay=timm_no_weight_decay, record_preprocessing=timm_pretrained_cfg,
        takes_interpolate_flag=False,  # TimmWrapper hands every keyword to timm's forward, which takes none
    ),
)
_BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}
KNOWN = ", ".join(f"{family.name} ({'/'.join(family.model_types)})" for family in FAMILIES)


def family_of(config) -> Family | None:
    return _BY_MODEL_TYPE.get(getattr(config, "model_type", None))


def require_family(config, key: str, needs: str) -> Family:
    """The family, or a RecipeError naming the recipe key that needs it and what would work."""
    family = family_of(config)
    if family is None:
        raise RecipeError(
            f"{key}: {needs}, which vit_hf knows for {KNOWN}; model_type {config.model_type!r} is none of them"
        )
    return family


def record_preprocessing(model, prep: Preprocessing) -> None:
    """Where the saved model's pipeline will read its preprocessing from the config (timm), put it there."""
    family = family_of(model.config)
    if family is not None:
        family.record_preprocessing(model.config, prep)


def check_progressive_resizing(model) -> None:
    """data.progressive_start_size trains below the model's size with interpolate_pos_encoding=True."""
    family = family_of(model.config)
    if family is not None and not family.takes_interpolate_flag:
        raise RecipeError(
            f"data.progressive_start_size: a {family.name} model's forward takes no interpolate_pos_encoding flag, "
            "which training below the model's size needs; use data.progressive_start_size: null"
        )


def blocks_of(model, key: str) -> nn.ModuleList:
    """The model's transformer blocks, in order; a RecipeError naming `key` (what needs them) for an unknown family."""
    return model.get_submodule(require_family(model.config, key, "needs the model's transformer blocks").blocks)


def resize_position_information(model, image_size: int) -> None:
    """The model's position information for image_size x image_size inputs, config included; a RecipeError
    before any training when it cannot be resized, saying what works instead."""
    family = family_of(model.config)
    if family is None:
        current = getattr(model.config, "image_size", None)
        if current is not None and current != image_size:
            raise RecipeError(
                f"data.image_size: {image_size} differs from the checkpoint's {current}, and vit_hf resizes position "
                f"information only for {KNOWN}, not model_type {model.config.model_type!r}; use data.image_size "
                f"{current}"
            )
        return
    current = family.image_size(model)
    if current is None or current == image_size:
        return
    if not isinstance(current, int):
        raise RecipeError(
            f"data.image_size: {image_size} is square, but the {family.name} checkpoint's position embeddings are for "
            f"{current[0]} x {current[1]} px, which vit_hf does not resample; use a square checkpoint"
        )
    patch = family.patch_size(model)
    if image_size % patch:
        nearest = sorted({max(patch, image_size - image_size % patch), image_size - image_size % patch + patch})
        raise RecipeError(
            f"data.image_size: {image_size} is not a multiple of the {family.name} checkpoint's patch size {patch}; "
            f"use {' or '.join(map(str, nearest))}"
        )
    family.resize(model, image_size)
    if hasattr(model.config, "image_size"):
        model.config.image_size = image_size
    logger.info("%s: position information resized from %s to %s px", family.name, current, image_size)
