"""Progressive resizing: the schedule, the resized batch, and a run that trains small and evaluates at full size."""

from __future__ import annotations

import json

import torch

from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from tests.helpers.trainers import TinyImages, make
from vit_hf.augment.resolution import ResolutionSchedule, build_resolution_schedule, resize_batch
from vit_hf.cli.run import main


def test_schedule_holds_then_ramps_then_holds_on_a_few_planned_patch_multiples():
    schedule = ResolutionSchedule(full=224, start=128, ramp=(0.5, 0.8), multiple=16)
    assert schedule.sizes == (128, 160, 192, 224)  # 4 stages: under torch_compile, 4 training graphs
    assert [schedule.size_at(p) for p in (0.0, 0.3, 0.5)] == [128, 128, 128]
    assert schedule.size_at(0.6) == 160 and schedule.size_at(0.7) == 192  # a third and two thirds up the ramp
    assert schedule.size_at(0.8) == schedule.size_at(1.0) == 224
    sizes = [schedule.size_at(p / 100) for p in range(101)]
    assert sizes == sorted(sizes) and set(sizes) == set(schedule.sizes)
    assert ResolutionSchedule(full=32, start=16, ramp=(0.5, 0.8), multiple=4, stages=2).sizes == (16, 32)
    assert ResolutionSchedule(full=32, start=24, ramp=(0.5, 0.8), multiple=4, stages=8).sizes == (24, 28, 32)


def test_off_unless_asked_and_smaller():
    assert build_resolution_schedule(None, [0.5, 0.8], 32, 4) is None
    assert build_resolution_schedule(32, [0.5, 0.8], 32, 4) is None
    assert build_resolution_schedule(16, [0.5, 0.8], 32, 4).start == 16
    assert build_resolution_schedule(16, [0.5, 0.8], 32, 4, stages=3).sizes == (16, 24, 32)


def test_resize_batch_shrinks_and_keeps_the_mean():
    batch = torch.rand(4, 3, 32, 32)
    small = resize_batch(batch, 16)
    assert small.shape == (4, 3, 16, 16)
    torch.testing.assert_close(small.mean(dim=(2, 3)), batch.mean(dim=(2, 3)), atol=0.02, rtol=0)
    assert resize_batch(batch, 32) is batch


def test_a_progressive_run_trains_small_and_saves_a_full_size_model(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=8, size=20)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=8)
    recipe["data"].update(image_size=16, progressive_start_size=8, progressive_ramp=[0.5, 1.0])
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["image_size"] == 16
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_accuracy"] >= 0


def uint8_batch() -> dict[str, torch.Tensor]:
    return {"pixel_values": TinyImages().pixels[:4], "labels": torch.zeros(4, dtype=torch.long)}


def test_the_trainer_feeds_the_scheduled_size(tmp_path):
    from vit_hf.training.trainer import VitTrainer

    trainer = make(VitTrainer, tmp_path)
    trainer.options.train_augment = lambda pixels, generator: pixels.float()
    trainer.options.resolution = ResolutionSchedule(full=16, start=8, ramp=(0.5, 1.0), multiple=4)
    trainer.model.train()
    trainer.state.max_steps, trainer.state.global_step = 10, 0
    batch = trainer.training_inputs(uint8_batch())
    assert batch["pixel_values"].shape[-1] == 8 and batch["interpolate_pos_encoding"] is True
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)
    trainer.state.global_step = 10
    batch = trainer.training_inputs(uint8_batch())
    assert batch["pixel_values"].shape[-1] == 16 and "interpolate_pos_encoding" not in batch


def test_batches_stored_below_the_training_size_are_cropped_straight_to_it(tmp_path):
    # data.storage_size 12 for a 16 px model: the random-resized crop resamples each stored image to 16 px
    # (one interpolation), and the model sees its own size, so no position-embedding interpolation.
    from vit_hf.augment.transform import build_train_augment
    from vit_hf.recipe.schema import DataConfig
    from vit_hf.training.trainer import VitTrainer

    trainer = make(VitTrainer, tmp_path)
    trainer.options.train_augment = build_train_augment(DataConfig(crop="random_resized"), [0.5] * 3, [0.5] * 3)
    trainer.options.image_size = 16
    trainer.model.train()
    stored = {"pixel_values": torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8),
              "labels": torch.zeros(4, dtype=torch.long)}
    batch = trainer.training_inputs(stored)
    assert batch["pixel_values"].shape == (4, 3, 16, 16) and "interpolate_pos_encoding" not in batch
    trainer.options.resolution = ResolutionSchedule(full=16, start=8, ramp=(0.5, 1.0), multiple=4)
    trainer.state.max_steps, trainer.state.global_step = 10, 0
    early = trainer.training_inputs(stored)  # progressive resizing's 8 px: cropped at 12, shrunk antialiased
    assert early["pixel_values"].shape == (4, 3, 8, 8) and early["interpolate_pos_encoding"] is True
    assert torch.isfinite(trainer.compute_loss(trainer.model, early))
