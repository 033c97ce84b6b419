"""VitTrainer: device augmentation reaches the model, and checkpoint restores really restore.

transformers 5.24 restores ViT checkpoints with strict=False under renamed keys, so its
resume_from_checkpoint and load_best_model_at_end keep the live encoder weights. These tests compare
what VitTrainer restores with `from_pretrained(checkpoint)`, and show that the plain Trainer does not.
"""

from __future__ import annotations

import torch
from transformers import Trainer, TrainingArguments, ViTForImageClassification, default_data_collator

from tests.conftest import tiny_vit_config
from vit_hf.data.augment import build_eval_transform
from vit_hf.metrics import compute_metrics, top_k_predictions
from vit_hf.trainer import VitTrainer

MEAN, STD = [0.5] * 3, [0.5] * 3


class TinyImages(torch.utils.data.Dataset):
    """uint8 images whose mean brightness tells the class: learnable in a few steps."""

    def __init__(self, n: int = 48, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        base = (self.labels * 100 + 20).view(n, 1, 1, 1).float()
        self.pixels = (base + torch.randn(n, 3, 16, 16, generator=g) * 10).clamp(0, 255).to(torch.uint8)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "labels": int(self.labels[i])}


def arguments(tmp_path, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16,
        learning_rate=5e-3, max_steps=12, save_strategy="steps", save_steps=6, eval_strategy="steps",
        eval_steps=6, logging_steps=3, report_to="none", use_cpu=True, remove_unused_columns=False,
        dataloader_num_workers=0, seed=0,
    )
    return TrainingArguments(**(values | overrides))


def make(trainer_cls, tmp_path, **overrides):
    torch.manual_seed(0)
    kwargs = dict(
        model=ViTForImageClassification(tiny_vit_config()), args=arguments(tmp_path, **overrides),
        train_dataset=TinyImages(), eval_dataset=TinyImages(seed=1), data_collator=default_data_collator,
        compute_metrics=compute_metrics, preprocess_logits_for_metrics=top_k_predictions,
    )
    if trainer_cls is VitTrainer:
        kwargs["eval_transform"] = build_eval_transform(MEAN, STD)
    return trainer_cls(**kwargs)


def reference_weights(checkpoint) -> dict[str, torch.Tensor]:
    return ViTForImageClassification.from_pretrained(checkpoint).state_dict()


def differing(model, reference: dict[str, torch.Tensor]) -> list[str]:
    live = model.state_dict()
    return [k for k, v in reference.items() if not torch.equal(live[k], v)]


def scramble(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))


def test_uint8_batches_are_normalized_on_the_device_before_the_model(tmp_path):
    trainer = make(VitTrainer, tmp_path)
    batch = default_data_collator([TinyImages()[i] for i in range(4)])
    prepared = trainer._prepare_inputs(batch)
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
    from vit_hf.config import DataConfig
    from vit_hf.data.augment import build_train_augment

    def augmenting_trainer(folder):
        trainer = make(VitTrainer, folder)
        trainer.train_augment = build_train_augment(DataConfig(crop="pad", pad=2, hflip=0.5), MEAN, STD)
        trainer.model.train()
        return trainer

    trainer, replay = augmenting_trainer(tmp_path / "a"), augmenting_trainer(tmp_path / "b")
    batch = default_data_collator([TinyImages()[i] for i in range(8)])
    first = trainer._prepare_inputs(dict(batch))["pixel_values"]
    again = replay._prepare_inputs(dict(batch))["pixel_values"]
    torch.testing.assert_close(first, again)  # same step and micro-batch -> same augmentation (resume replays it)
    trainer.state.global_step += 1
    assert not torch.equal(trainer._prepare_inputs(dict(batch))["pixel_values"], first)
