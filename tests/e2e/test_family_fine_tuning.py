"""Fine-tuning a checkpoint of each ViT family through the real CLI (`model.pretrained: PATH`), at a new size.

Each family's tiny 16 px checkpoint (tests/helpers/models.py, with its own image processor and normalization)
is fine-tuned at 24 px on generated images with layer-wise learning-rate decay, for a few steps; output_dir must
then hold what a user loads as is: a model of the family's trainable class for the dataset's labels at 24 px, an
image processor with the checkpoint's normalization at 24 px, and a stock `pipeline("image-classification")`
answering with the dataset's labels, without any interpolate flag. The timm run needs timm (skipped without it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForImageClassification, pipeline

from tests.helpers import ROOT
from tests.helpers.datagen import CLASSES, class_image, make_imagefolder
from tests.helpers.models import save_checkpoint
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main

TRAINED_CLASS = {"vit": "ViTForImageClassification", "deit_with_teacher": "DeiTForImageClassification",
                 "beit_relative": "BeitForImageClassification", "dinov2_backbone": "Dinov2ForImageClassification",
                 "timm_vit": "TimmWrapperForImageClassification"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("images"), per_class=8, size=20)


def fine_tune(tmp_path: Path, data: Path, pretrained: Path, *overrides: str) -> int:
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=4, eval_strategy="no", save_strategy="no")
    del recipe["training"]["num_train_epochs"]
    recipe["model"] = {"pretrained": str(pretrained)}
    recipe["data"]["image_size"] = 24
    recipe["extras"] = {"layer_decay": 0.75}
    return main([str(write_recipe(tmp_path, recipe)), *overrides])


def assert_answers_through_pipeline(out: Path, size: int) -> None:
    classify = pipeline("image-classification", model=str(out))
    answer = classify(class_image(1, np.random.default_rng(1), size=20), top_k=3)
    assert sorted(entry["label"] for entry in answer) == sorted(CLASSES)
    pixels = classify.image_processor(class_image(1, np.random.default_rng(1), size=20), return_tensors="pt")
    assert pixels["pixel_values"].shape[-2:] == (size, size)


@pytest.mark.parametrize("kind", ["vit", "deit_with_teacher", "beit_relative", "dinov2_backbone"])
def test_each_family_fine_tunes_at_a_new_size_and_answers_through_a_stock_pipeline(kind, images, tmp_path):
    checkpoint = save_checkpoint(kind, tmp_path / "checkpoint")
    assert fine_tune(tmp_path, images, checkpoint.path) == 0
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [TRAINED_CLASS[kind]] and config["image_size"] == 24
    assert config["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == checkpoint.mean and processor["image_std"] == checkpoint.std
    assert processor["crop_size"] == {"height": 24, "width": 24}
    model = AutoModelForImageClassification.from_pretrained(out)
    position = model.base_model.embeddings.position_embeddings
    if position is not None:  # BEiT with relative position bias has none
        assert position.shape[1] == (24 // 4) ** 2 + (2 if kind == "deit_with_teacher" else 1)
    assert_answers_through_pipeline(out, 24)


def test_a_timm_vit_fine_tunes_at_a_new_size_and_answers_through_a_stock_pipeline(images, tmp_path):
    pytest.importorskip("timm")
    checkpoint = save_checkpoint("timm_vit", tmp_path / "checkpoint")
    assert fine_tune(tmp_path, images, checkpoint.path) == 0
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [TRAINED_CLASS["timm_vit"]] and config["label_names"] == list(CLASSES)
    assert config["model_args"]["img_size"] == 24
    # AutoImageProcessor reads a local timm checkpoint's preprocessing from config.json's pretrained_cfg
    assert config["pretrained_cfg"]["input_size"] == [3, 24, 24]
    assert (config["pretrained_cfg"]["mean"], config["pretrained_cfg"]["std"]) == (checkpoint.mean, checkpoint.std)
    assert_answers_through_pipeline(out, 24)


def test_a_family_that_cannot_be_resized_fails_before_training_with_exit_2(images, tmp_path, capsys):
    from transformers import SwinConfig, SwinForImageClassification

    SwinForImageClassification(SwinConfig(image_size=16, patch_size=4, embed_dim=16, depths=[1], num_heads=[1],
                                          window_size=2, num_labels=3)).save_pretrained(tmp_path / "swin")
    assert fine_tune(tmp_path, images, tmp_path / "swin") == 2
    error = capsys.readouterr().err
    assert "data.image_size: 24 differs from the checkpoint's 16" in error and "use data.image_size 16" in error
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_shipped_dinov2_recipe_fine_tunes_a_dinov2_backbone(images, tmp_path):
    """recipes/dinov2_small_finetune_cifar10.yaml with every option it sets, on a tiny DINOv2 in place of
    facebook/dinov2-small, at 24 px for 3 steps, in fp32 (bf16 is the GPU's)."""
    checkpoint = save_checkpoint("dinov2_backbone", tmp_path / "checkpoint")
    out = tmp_path / "out"
    code = main([str(ROOT / "recipes" / "dinov2_small_finetune_cifar10.yaml"), "--model.pretrained",
                 str(checkpoint.path), "--data.dataset", str(images), "--data.image_size", "24",
                 "--training.output_dir", str(out), "--training.max_steps", "3", "--budget.time", "null",
                 "--training.bf16", "false", "--training.per_device_train_batch_size", "8",
                 "--training.per_device_eval_batch_size", "16", "--training.dataloader_num_workers", "0",
                 "--training.eval_strategy", '"no"', "--training.save_strategy", '"no"',
                 "--training.load_best_model_at_end", "false", "--resume", "never"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Dinov2ForImageClassification"] and config["image_size"] == 24
    assert_answers_through_pipeline(out, 24)
