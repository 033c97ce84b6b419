"""VitTrainer: device augmentation reaches the model, and checkpoint restores really restore.

transformers 5.24 restores ViT checkpoints with strict=False under renamed keys, so its
resume_from_checkpoint and load_best_model_at_end keep the live encoder weights. These tests compare
what VitTrainer restores with `from_pretrained(checkpoint)`, and show that the plain Trainer does not.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import Trainer, default_data_collator

from tests.helpers.trainers import MEAN, STD, TinyImages, make, reference_weights, scramble
from vit_hf.training.trainer import VitTrainer


def differing(model, reference: dict[str, torch.Tensor]) -> list[str]:
    live = model.state_dict()
    return [k for k, v in reference.items() if not torch.equal(live[k], v)]


def test_uint8_batches_are_normalized_on_the_device_before_the_model(tmp_path):
    trainer = make(VitTrainer, tmp_path)
    batch = default_data_collator([TinyImages()[i] for i in range(4)])
    prepared = trainer.evaluation_inputs(batch)
    assert prepared["pixel_values"].dtype == torch.float32
    expected = (batch["pixel_values"].float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(prepared["pixel_values"], expected)


def test_resume_from_checkpoint_restores_every_weight(tmp_path):
    trainer = make(VitTrainer, tmp_path)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-6"
    scramble(trainer.model)
    trainer._load_from_checkpoint(str(checkpoint))
    assert differing(trainer.model, reference_weights(checkpoint)) == []


def test_full_resume_continues_from_the_checkpoint_weights(tmp_path):
    make(VitTrainer, tmp_path).train()
    checkpoint = tmp_path / "checkpoint-12"
    resumed = make(VitTrainer, tmp_path)  # a fresh process would build a fresh model like this
    resumed.train(resume_from_checkpoint=str(checkpoint))  # already at max_steps: restore only
    assert resumed.state.global_step == 12
    assert differing(resumed.model, reference_weights(checkpoint)) == []


def test_load_best_model_at_end_restores_the_best_checkpoint(tmp_path):
    trainer = make(VitTrainer, tmp_path, load_best_model_at_end=True, metric_for_best_model="loss",
                   greater_is_better=False, save_total_limit=None)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None
    assert differing(trainer.model, reference_weights(best)) == []


def test_the_plain_trainer_loses_the_encoder_weights_this_is_what_vittrainer_fixes(tmp_path):
    """If this starts failing, transformers fixed the bug and VitTrainer's override can go."""
    trainer = make(Trainer, tmp_path, save_steps=12, eval_strategy="no")
    trainer.train_dataset = None
    checkpoint = tmp_path / "ckpt"
    trainer.save_model(str(checkpoint))
    scramble(trainer.model)
    trainer._load_from_checkpoint(str(checkpoint))
    lost = differing(trainer.model, reference_weights(checkpoint))
    assert any("layer" in name for name in lost)


def test_augmentation_is_reproducible_per_step(tmp_path):
    from vit_hf.augment.transform import build_train_augment
    from vit_hf.recipe.schema import DataConfig

    def augmenting_trainer(folder):
        trainer = make(VitTrainer, folder)
        trainer.options.train_augment = build_train_augment(DataConfig(crop="pad", pad=2, hflip=0.5), MEAN, STD)
        trainer.model.train()
        return trainer

    trainer, replay = augmenting_trainer(tmp_path / "a"), augmenting_trainer(tmp_path / "b")
    batch = default_data_collator([TinyImages()[i] for i in range(8)])
    first = trainer.training_inputs(dict(batch))["pixel_values"]
    again = replay.training_inputs(dict(batch))["pixel_values"]
    torch.testing.assert_close(first, again)  # same step and micro-batch -> same augmentation (resume replays it)
    trainer.state.global_step += 1
    assert not torch.equal(trainer.training_inputs(dict(batch))["pixel_values"], first)


# --- data.gpu_decode: batches of JPEG files ---------------------------------------------------------------


def gpu_decode_recipe(tmp_path):
    from vit_hf.recipe.load import recipe_from_dict

    data = {"dataset": "x", "loader": "decode", "gpu_decode": True, "image_size": 32, "crop_pct": 0.875}
    return recipe_from_dict({"data": data, "model": {"preset": "vit-tiny"}, "training": {"output_dir": str(tmp_path)}})


def test_eval_only_decodes_the_eval_files_on_the_device_as_training_does(tmp_path):
    # Without the decoding in its options, --eval-only handed the model the encoded files (a TypeError).
    from vit_hf.data.pipeline import eval_decoding
    from vit_hf.modeling.preprocessing import resolve_preprocessing
    from vit_hf.training.build import gpu_decoding
    from vit_hf.training.evaluate import evaluation_options

    recipe = gpu_decode_recipe(tmp_path)
    prep = resolve_preprocessing(recipe)
    options = evaluation_options(recipe, prep)
    assert options.gpu_decode is not None and options.gpu_decode == gpu_decoding(recipe.data, prep)
    assert options.gpu_decode.eval == eval_decoding(recipe.data, 32, 0.875)


def test_the_flops_of_a_batch_of_files_count_the_runs_image_size_and_need_none_in_the_config(tmp_path):
    # The image size came from model.config.image_size, read before the patch size: a config without one (timm's
    # wrapper on the Hub, a CNN) raised AttributeError at the first step.
    from transformers import ResNetConfig, ResNetForImageClassification, ViTForImageClassification

    from tests.helpers.models import tiny_vit_config
    from tests.helpers.trainers import arguments
    from vit_hf.training.batches import RunOptions

    batch = {"labels": torch.tensor([0, 1]), "encoded": [np.frombuffer(b"\xff\xd8 a JPEG", np.uint8)] * 2}
    vit = VitTrainer(model=ViTForImageClassification(tiny_vit_config(image_size=16, patch_size=4)),
                     args=arguments(tmp_path, eval_strategy="no"), options=RunOptions(image_size=32))
    parameters = sum(p.numel() for p in vit.model.parameters())
    assert vit.floating_point_ops(batch) == 6 * parameters * ((32 // 4) ** 2 + 1) * 2  # at the run's 32 px
    cnn = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=3))
    assert not hasattr(cnn.config, "image_size") and not hasattr(cnn.config, "patch_size")
    trainer = VitTrainer(model=cnn, args=arguments(tmp_path, eval_strategy="no"), options=RunOptions(image_size=32))
    assert trainer.floating_point_ops(batch) == 0  # the Trainer's own estimate: it finds no pixel_values to count
