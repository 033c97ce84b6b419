"""Mixup/CutMix with soft targets (vit_hf/data/mixing.py) and VitTrainer's soft-target loss, on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import default_data_collator

from tests.helpers.trainers import MEAN, STD, TinyImages, make
from vit_hf.augment.mixing import Mixing, build_mixing, mix_batch, smooth_one_hot, soft_target_cross_entropy
from vit_hf.augment.transform import build_train_augment
from vit_hf.errors import RecipeError
from vit_hf.recipe.schema import DataConfig
from vit_hf.training.trainer import VitTrainer

CLASSES = 10


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized-looking float images and their labels, all classes different from their mirror's."""
    x = torch.randn(size, 3, 32, 32, generator=seeded(seed))
    return x, torch.arange(size) % CLASSES


def mix(x, labels, seed=0, **settings):
    return mix_batch(x, labels, CLASSES, **settings, rng=np.random.default_rng(seed))


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, CLASSES).float()


# --- targets ----------------------------------------------------------------------------------


def test_smooth_one_hot_moves_smoothing_off_the_label_evenly():
    targets = smooth_one_hot(torch.tensor([3, 0]), CLASSES, 0.1)
    assert targets.dtype == torch.float32 and targets.shape == (2, CLASSES)
    torch.testing.assert_close(targets.sum(1), torch.ones(2))
    assert targets[0, 3] == pytest.approx(0.91) and targets[0, 0] == pytest.approx(0.01)


def test_unmixed_batch_keeps_its_pixels_and_gets_smoothed_one_hot_targets():
    x, labels = batch()
    out, targets = mix(x, labels, mixup_alpha=0.8, prob=0.0, label_smoothing=0.1)
    assert torch.equal(out, x)
    torch.testing.assert_close(targets, smooth_one_hot(labels, CLASSES, 0.1))


# --- mixup ------------------------------------------------------------------------------------


def mixup_lambda(out: torch.Tensor, x: torch.Tensor) -> float:
    """lam from out = lam * x + (1 - lam) * x.flip(0), solved on sample 0."""
    partner = x.flip(0)
    return (((out[0] - partner[0]) * (x[0] - partner[0])).sum() / ((x[0] - partner[0]) ** 2).sum()).item()


@pytest.mark.parametrize("seed", range(4))
def test_mixup_blends_with_the_mirror_and_targets_follow_lambda(seed):
    x, labels = batch()
    out, targets = mix(x, labels, seed, mixup_alpha=0.8)
    lam = mixup_lambda(out, x)
    assert 0 < lam < 1
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(targets, lam * one_hot(labels) + (1 - lam) * one_hot(labels.flip(0)), atol=1e-5, rtol=0)
    torch.testing.assert_close(targets.sum(1), torch.ones(16))


def test_mixup_smooths_before_mixing():
    x, labels = batch()
    out, targets = mix(x, labels, mixup_alpha=0.8, label_smoothing=0.1)
    lam = mixup_lambda(out, x)
    smoothed = smooth_one_hot(labels, CLASSES, 0.1)
    torch.testing.assert_close(targets, lam * smoothed + (1 - lam) * smoothed.flip(0), atol=1e-5, rtol=0)
    assert targets.min() == pytest.approx(0.01)  # classes that neither image has keep smoothing / C


def test_mixing_is_deterministic_given_the_seed_and_leaves_its_input_alone():
    x, labels = batch()
    before = x.clone()
    first = mix(x, labels, 1, mixup_alpha=0.8, cutmix_alpha=1.0)
    assert all(torch.equal(a, b) for a, b in zip(first, mix(x, labels, 1, mixup_alpha=0.8, cutmix_alpha=1.0)))
    assert not torch.equal(first[0], mix(x, labels, 2, mixup_alpha=0.8, cutmix_alpha=1.0)[0])
    assert torch.equal(x, before)


def test_an_odd_batch_mixes_its_middle_sample_with_itself():
    x, labels = batch(size=5)
    out, targets = mix(x, labels, mixup_alpha=0.8)
    torch.testing.assert_close(out[2], x[2])
    torch.testing.assert_close(targets[2], one_hot(labels)[2])


# --- cutmix -----------------------------------------------------------------------------------


def pasted_fraction(out: torch.Tensor, x: torch.Tensor) -> float:
    """Fraction of the image taken from the partner, checked to be one box, the same in every sample."""
    pasted = (out != x).any(dim=1)
    assert (pasted == pasted[0]).all()
    rows, cols = pasted[0].any(dim=1).nonzero().flatten(), pasted[0].any(dim=0).nonzero().flatten()
    if len(rows) == 0:
        return 0.0
    box = pasted[0, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert box.all() and pasted[0].sum() == box.numel()
    assert torch.equal(out[:, :, pasted[0]], x.flip(0)[:, :, pasted[0]])
    return box.numel() / pasted[0].numel()


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_pastes_one_box_from_the_mirror_and_lambda_is_its_area(seed):
    x, labels = batch()
    out, targets = mix(x, labels, seed, cutmix_alpha=1.0)
    lam = 1 - pasted_fraction(out, x)
    torch.testing.assert_close(targets, lam * one_hot(labels) + (1 - lam) * one_hot(labels.flip(0)))
    torch.testing.assert_close(targets.sum(1), torch.ones(16))


def is_cutmix(out: torch.Tensor, x: torch.Tensor) -> bool:
    """CutMix copies pixels; Mixup blends every one of them."""
    return bool(((out == x) | (out == x.flip(0))).all())


def test_switch_prob_chooses_between_cutmix_and_mixup():
    x, labels = batch()
    both = dict(mixup_alpha=0.8, cutmix_alpha=1.0)
    assert all(is_cutmix(mix(x, labels, s, **both, switch_prob=1.0)[0], x) for s in range(5))
    assert not any(is_cutmix(mix(x, labels, s, **both, switch_prob=0.0)[0], x) for s in range(5))
    chosen = [is_cutmix(mix(x, labels, s, **both, switch_prob=0.5)[0], x) for s in range(40)]
    assert 10 < sum(chosen) < 30


def test_mix_prob_mixes_about_that_share_of_batches():
    x, labels = batch()
    mixed = [not torch.equal(mix(x, labels, s, mixup_alpha=0.8, prob=0.3)[0], x) for s in range(60)]
    assert 8 < sum(mixed) < 30


# --- loss -------------------------------------------------------------------------------------


def test_soft_target_cross_entropy_equals_cross_entropy_for_one_hot_targets():
    logits, labels = torch.randn(8, CLASSES, generator=seeded()), torch.arange(8)
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot(labels)), F.cross_entropy(logits, labels))
    smoothed = smooth_one_hot(labels, CLASSES, 0.1)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(soft_target_cross_entropy(logits, smoothed), expected)


def test_soft_target_cross_entropy_divides_by_the_accumulated_batch_count():
    logits, targets = torch.randn(8, CLASSES, generator=seeded()), one_hot(torch.arange(8))
    mean = soft_target_cross_entropy(logits, targets)
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets, num_items_in_batch=32), mean / 4)
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets, torch.tensor(16)), mean / 2)


# --- recipe -----------------------------------------------------------------------------------


def test_build_mixing_is_off_without_alphas_and_prints_its_settings():
    assert build_mixing(DataConfig(), 10) is None
    mixing = build_mixing(DataConfig(mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=0.9), 10, 0.1)
    assert repr(mixing) == (
        "Mixing(num_classes=10, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.9, switch_prob=0.5, label_smoothing=0.1)"
    )


def test_mixing_calls_mix_batch_with_its_settings():
    x, labels = batch()
    mixing = Mixing(CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    expected = mix(x, labels, 3, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    assert all(torch.equal(a, b) for a, b in zip(mixing(x, labels, np.random.default_rng(3)), expected))


@pytest.mark.parametrize(
    "key, value", [("mixup_alpha", -0.1), ("cutmix_alpha", -1), ("mix_prob", 1.5), ("mix_switch_prob", -0.5)]
)
def test_recipe_rejects_mixing_settings_out_of_range(key, value):
    with pytest.raises(RecipeError, match=f"data.{key}: {value}"):
        DataConfig(**{key: value})  # each field's constraint is checked as its section is built


# --- VitTrainer ---------------------------------------------------------------------------------


def mixing_trainer(tmp_path, **overrides) -> VitTrainer:
    trainer = make(VitTrainer, tmp_path, **overrides)
    trainer.options.train_augment = build_train_augment(DataConfig(crop="pad", pad=2), MEAN, STD)
    trainer.options.mixing = Mixing(3, mixup_alpha=0.8, cutmix_alpha=1.0,
                                    label_smoothing=trainer.args.label_smoothing_factor)
    return trainer


def tiny_batch(size: int = 8) -> dict[str, torch.Tensor]:
    return default_data_collator([TinyImages()[i] for i in range(size)])


def test_training_batches_get_mixed_soft_targets_reproducibly(tmp_path):
    trainer = mixing_trainer(tmp_path)
    trainer.model.train()
    prepared = trainer.training_inputs(tiny_batch())
    assert prepared["labels"].shape == (8, 3) and prepared["labels"].dtype == torch.float32
    torch.testing.assert_close(prepared["labels"].sum(1), torch.ones(8))
    replay = mixing_trainer(tmp_path / "again")  # the same run again (or resumed at this step)
    replay.model.train()
    again = replay.training_inputs(tiny_batch())
    assert torch.equal(prepared["pixel_values"], again["pixel_values"])
    assert torch.equal(prepared["labels"], again["labels"])


def test_each_micro_batch_of_an_accumulated_step_is_augmented_anew(tmp_path):
    trainer = mixing_trainer(tmp_path, gradient_accumulation_steps=2)
    trainer.model.train()
    first, second = (trainer.training_inputs(tiny_batch())["pixel_values"] for _ in range(2))
    assert not torch.equal(first, second)  # the same images in both micro-batches: augmented differently
    trainer.state.global_step += 1
    third = trainer.training_inputs(tiny_batch())["pixel_values"]  # the next step's first micro-batch
    assert not torch.equal(third, first) and not torch.equal(third, second)


def test_evaluation_batches_keep_their_labels(tmp_path):
    trainer = mixing_trainer(tmp_path)
    trainer.model.eval()
    assert torch.equal(trainer.evaluation_inputs(tiny_batch())["labels"], tiny_batch()["labels"])


def test_the_loss_of_a_mixed_batch_is_the_soft_target_loss_smoothed_once(tmp_path):
    trainer = mixing_trainer(tmp_path, label_smoothing_factor=0.1)
    assert trainer.label_smoother is not None  # the Trainer's own, which must not smooth again
    trainer.model.train()
    prepared = trainer.training_inputs(tiny_batch())
    trainer.model.eval()  # no dropout: the two forward passes agree
    loss, outputs = trainer.compute_loss(trainer.model, prepared, return_outputs=True)
    logits = trainer.model(pixel_values=prepared["pixel_values"]).logits
    torch.testing.assert_close(outputs.logits, logits)
    torch.testing.assert_close(loss, soft_target_cross_entropy(logits, prepared["labels"]))
    accumulated = trainer.compute_loss(trainer.model, prepared, num_items_in_batch=torch.tensor(16))
    torch.testing.assert_close(accumulated, loss / 2)
    assert trainer.model.config.problem_type != "multi_label_classification"


def test_hard_labels_still_get_the_trainers_loss(tmp_path):
    trainer = mixing_trainer(tmp_path)
    trainer.model.eval()
    prepared = trainer.evaluation_inputs(tiny_batch())
    logits = trainer.model(pixel_values=prepared["pixel_values"]).logits
    expected = F.cross_entropy(logits, prepared["labels"])
    torch.testing.assert_close(trainer.compute_loss(trainer.model, prepared), expected)


def test_training_with_mixing_runs_and_logs_a_finite_loss(tmp_path):
    trainer = mixing_trainer(tmp_path, max_steps=4, logging_steps=2, eval_strategy="no", save_strategy="no",
                             label_smoothing_factor=0.1, gradient_accumulation_steps=2)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # A per-image mean (ln 3 = 1.1 untrained): accumulating 2 micro-batches neither sums nor halves it.
    assert len(losses) == 2 and all(0.5 < loss < 2 for loss in losses)
