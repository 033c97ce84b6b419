"""Tiny trainers on in-memory images, for the tests of VitTrainer, its callbacks and the outputs of a run."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import TrainingArguments, ViTForImageClassification, default_data_collator

from tests.helpers.models import tiny_vit_config
from vit_hf.augment.transform import build_eval_transform
from vit_hf.hub.card import write_model_card
from vit_hf.metrics import DEFAULT_METRICS
from vit_hf.outputs.plots import evaluation_breakdown, write_curves
from vit_hf.recipe.load import recipe_from_dict
from vit_hf.training.batches import RunOptions
from vit_hf.training.metrics import load_metrics, top_k_predictions
from vit_hf.training.monitor import RunMonitor
from vit_hf.training.trainer import VitTrainer

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
        compute_metrics=load_metrics(DEFAULT_METRICS), preprocess_logits_for_metrics=top_k_predictions,
    )
    if trainer_cls is VitTrainer:
        kwargs["options"] = RunOptions(eval_transform=build_eval_transform(MEAN, STD))
    return trainer_cls(**kwargs)


def reference_weights(checkpoint) -> dict[str, torch.Tensor]:
    return ViTForImageClassification.from_pretrained(checkpoint).state_dict()


def scramble(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))


class MonitoredTrainer(VitTrainer):
    """VitTrainer with the overrides this change asks trainer.py for: log() (see callbacks.py for why) and the card."""

    monitor: RunMonitor | None = None

    def log(self, logs, start_time=None):
        if self.monitor is not None:
            logs.update(self.monitor.log_metrics(logs, self.state))
        super().log(logs, start_time)

    def create_model_card(self, *args, **kwargs):
        if self.is_world_process_zero():
            write_model_card(self.args.output_dir, model_id=self.hub_model_id)


class SlowImages(TinyImages):
    """A dataset whose images take a while to arrive: the step waits for data."""

    def __getitem__(self, i):
        time.sleep(0.02)  # 160 ms a batch of 8: several times a tiny model's step, even on a busy CPU
        return super().__getitem__(i)


def monitored(tmp_path, monitor: RunMonitor, train_dataset=None, **overrides) -> MonitoredTrainer:
    overrides = dict(eval_strategy="no", save_strategy="no", logging_steps=2) | overrides
    trainer = make(MonitoredTrainer, tmp_path, **overrides)
    if train_dataset is not None:
        trainer.train_dataset = train_dataset
    trainer.monitor = monitor
    trainer.add_callback(monitor)
    return trainer


def finished_run(path: Path, dataset: str = "uoft-cs/cifar10", learning_rate: float = 5e-3):
    """An output_dir as train() leaves it with the integration edits in: recipe, model, state, metrics, figures.

    Returns (trainer, monitor, final metrics).
    """
    recipe = recipe_from_dict({
        "data": {"dataset": dataset},
        "model": {"preset": "vit-tiny"},
        "training": {"output_dir": str(path), "learning_rate": learning_rate},
        "budget": {"time": "10m"},
    })
    path.mkdir(parents=True, exist_ok=True)
    (path / "recipe.yaml").write_text(recipe.to_yaml())
    monitor = RunMonitor()
    trainer = monitored(path, monitor, max_steps=6, eval_strategy="steps", eval_steps=3, learning_rate=learning_rate)
    trainer.train()
    output = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    trainer.log(output.metrics)
    names = [trainer.model.config.id2label[i] for i in range(trainer.model.config.num_labels)]
    breakdown = evaluation_breakdown(output.predictions, output.label_ids, names, path)
    trainer.save_metrics("eval", output.metrics | breakdown)
    with monitor.timed("saving"):
        trainer.save_model()
        trainer.save_state()
    write_curves(path)
    return trainer, monitor, output.metrics
