"""Tiny random-init models: seconds to train, never downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification


def tiny_vit_config(num_labels: int = 3, image_size: int = 16, patch_size: int = 4) -> ViTConfig:
    names = [f"class_{i}" for i in range(num_labels)]
    return ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=image_size,
        patch_size=patch_size,
        num_labels=num_labels,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )


# One tiny random checkpoint per ViT family vit_hf fine-tunes, saved as the Hub holds such a model: its
# weights (every tensor perturbed, so that none is left at a constant init), its config with 3 labels
# class_0..2, and its own image processor with a normalization of its own, so a test can tell where
# mean and std came from. 16 px, patch 4 (a 4 x 4 grid), width 32, 2 blocks.

FAMILY_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=16,
                    patch_size=4)
CHECKPOINT_LABELS = [f"class_{i}" for i in range(3)]


@dataclass(frozen=True)
class Checkpoint:
    kind: str
    path: Path
    mean: list[float]
    std: list[float]


def checkpoint_label_maps(names=CHECKPOINT_LABELS) -> dict:
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def perturb(model, seed: int):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def _vit(mean, std):
    from transformers import ViTImageProcessor

    model = ViTForImageClassification(ViTConfig(**FAMILY_SHAPE, **checkpoint_label_maps()))
    return model, ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=mean, image_std=std)


def _deit_with_teacher(mean, std):
    """A distilled DeiT as facebook/deit-*-distilled-* are: DeiTForImageClassificationWithTeacher."""
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher, DeiTImageProcessor

    model = DeiTForImageClassificationWithTeacher(DeiTConfig(**FAMILY_SHAPE, **checkpoint_label_maps()))
    processor = DeiTImageProcessor(size={"height": 20, "width": 20}, crop_size={"height": 16, "width": 16},
                                   do_center_crop=True, image_mean=mean, image_std=std)
    return model, processor


def _beit(mean, std, **position):
    from transformers import BeitConfig, BeitForImageClassification, BeitImageProcessor

    model = BeitForImageClassification(BeitConfig(**FAMILY_SHAPE, **position, **checkpoint_label_maps()))
    processor = BeitImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16},
                                   do_center_crop=True, image_mean=mean, image_std=std)
    return model, processor


def _beit_relative(mean, std):
    """As microsoft/beit-*-patch16-224 (fine-tuned): a relative position bias table in each block, no absolute one."""
    return _beit(mean, std, use_relative_position_bias=True, use_absolute_position_embeddings=False)


def _beit_shared_absolute(mean, std):
    """The other BEiT options: absolute position embeddings, one relative position bias table for all blocks."""
    return _beit(mean, std, use_absolute_position_embeddings=True, use_shared_relative_position_bias=True)


def _dinov2_backbone(mean, std):
    """As facebook/dinov2-*: a Dinov2Model, no classification head, a BitImageProcessor (shortest edge, crop)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**FAMILY_SHAPE))
    processor = BitImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16},
                                  do_center_crop=True, image_mean=mean, image_std=std)
    return model, processor


def _timm_vit(mean, std):
    """A timm ViT with a register token through TimmWrapperForImageClassification (needs timm). Its preprocessing
    is in config.json's pretrained_cfg, as on the Hub: TimmWrapperImageProcessor saves no file of its own."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    config = TimmWrapperConfig(
        architecture="vit_tiny_patch16_224",
        model_args={"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "reg_tokens": 1},
        pretrained_cfg={"input_size": [3, 16, 16], "mean": mean, "std": std, "crop_pct": 0.875,
                        "crop_mode": "center", "interpolation": "bicubic"},
        **checkpoint_label_maps(),
    )
    return TimmWrapperForImageClassification(config), None


CHECKPOINT_KINDS = {
    "vit": _vit,
    "deit_with_teacher": _deit_with_teacher,
    "beit_relative": _beit_relative,
    "beit_shared_absolute": _beit_shared_absolute,
    "dinov2_backbone": _dinov2_backbone,
    "timm_vit": _timm_vit,
}


def save_checkpoint(kind: str, path: Path, seed: int = 0) -> Checkpoint:
    """A tiny checkpoint of `kind` (CHECKPOINT_KINDS) saved to `path`, with a normalization of its own."""
    index = list(CHECKPOINT_KINDS).index(kind)
    mean = [round(0.30 + 0.01 * index + 0.05 * c, 3) for c in range(3)]
    std = [round(0.20 + 0.01 * index + 0.02 * c, 3) for c in range(3)]
    torch.manual_seed(seed)
    model, processor = CHECKPOINT_KINDS[kind](mean, std)
    perturb(model, seed).save_pretrained(path)
    if processor is not None:
        processor.save_pretrained(path)
    return Checkpoint(kind, Path(path), mean, std)
