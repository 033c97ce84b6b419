"""Tiny recipes for runs through the real CLI: a few-second ViT on generated images."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_MODEL = {
    "preset": "vit-tiny",
    "patch_size": 4,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def tiny_recipe(data_dir: Path, output_dir: Path, **training) -> dict:
    return {
        "data": {"dataset": str(data_dir), "image_size": 16, "crop": "pad", "pad": 2, "hflip": 0.0},
        "model": dict(TINY_MODEL),
        "training": {
            "output_dir": str(output_dir),
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 16,
            "learning_rate": 3e-3,
            "num_train_epochs": 6,
            "logging_steps": 5,
            "dataloader_num_workers": 0,
            "seed": 0,
            **training,
        },
    }


def write_recipe(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path
