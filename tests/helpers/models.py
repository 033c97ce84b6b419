"""Tiny random-init models: seconds to train, never downloaded."""

from __future__ import annotations

from transformers import ViTConfig


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
