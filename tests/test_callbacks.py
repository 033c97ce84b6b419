"""RunMonitor and BudgetProgressBar on a real Trainer: what a user sees in the logs, TensorBoard and the bar."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import pytest
import torch
from transformers import ProgressCallback, TrainerCallback

from tests.test_trainer import TinyImages, make
from vit_hf.budget import TimeBudget
from vit_hf.callbacks import BudgetProgressBar, InputBoundWatch, RunMonitor, input_bound_advice, use_budget_progress_bar
from vit_hf.card import write_model_card
from vit_hf.plots import evaluation_breakdown, write_curves
from vit_hf.recipe import recipe_from_dict
from vit_hf.trainer import VitTrainer


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


class Recorder(TrainerCallback):
    """Stands for a reporting integration: those are registered before any user callback."""

    def __init__(self):
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def monitored(tmp_path, monitor: RunMonitor, train_dataset=None, **overrides) -> MonitoredTrainer:
    overrides = dict(eval_strategy="no", save_strategy="no", logging_steps=2) | overrides
    trainer = make(MonitoredTrainer, tmp_path, **overrides)
    if train_dataset is not None:
        trainer.train_dataset = train_dataset
    trainer.monitor = monitor
    trainer.add_callback(monitor)
    return trainer


def training_entries(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def test_training_logs_carry_throughput_wait_and_position(tmp_path):
    recorder = Recorder()
    trainer = monitored(tmp_path, RunMonitor(), max_steps=6)
    trainer.callback_handler.callbacks.insert(1, recorder)  # where report_to's integrations sit
    trainer.train()

    entries = training_entries(trainer)
    assert len(entries) == 3  # max_steps 6, logging_steps 2
    for entry in entries:
        assert entry["images_per_second"] > 0
        assert 0.0 <= entry["data_wait_fraction"] <= 1.0
        assert entry["images_seen"] == entry["step"] * 8
        assert torch.cuda.is_available() or not any(key.startswith("gpu_") for key in entry)
    elapsed = [entry["elapsed_seconds"] for entry in entries]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert entries[-1]["eta_seconds"] == 0  # max_steps reached
    assert "images_per_second" in recorder.logs[0]  # an integration sees the keys, not only log_history


def test_with_a_budget_the_logs_count_it_down_and_the_bar_shows_time_not_the_step_sentinel(tmp_path):
    budget = TimeBudget(seconds=600, started_at=time.monotonic() - 30)
    trainer = monitored(tmp_path, RunMonitor(budget=budget), max_steps=6)
    use_budget_progress_bar(trainer, budget)
    bars = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback)]
    assert len(bars) == 1 and isinstance(bars[0], BudgetProgressBar)
    shown = watch_bar(bars[0])
    trainer.train()

    entries = training_entries(trainer)
    remaining = [entry["budget_remaining_seconds"] for entry in entries]
    assert all(b < a for a, b in zip(remaining, remaining[1:]))
    assert all(abs(e["budget_spent_seconds"] + e["budget_remaining_seconds"] - 600) < 1 for e in entries)
    total, seconds, text = shown[-1]
    assert total == 600 and 30 <= seconds < 90
    assert "step 6" in text and "img/s" in text and "of 10m00s" in text and "left" in text


def watch_bar(bar: BudgetProgressBar) -> list[tuple]:
    """(total, position, text) of the bar after each step."""
    shown = []
    original = bar.on_step_end

    def on_step_end(args, state, control, **kwargs):
        original(args, state, control, **kwargs)
        shown.append((bar.training_bar.total, bar.training_bar.n, bar.describe(state)))

    bar.on_step_end = on_step_end
    return shown


def test_a_slow_dataset_is_reported_input_bound(tmp_path, caplog):
    # 96 images: the steps stay inside one epoch (the loader fetches one batch ahead, so an epoch's
    # last step has no fetch before it).
    trainer = monitored(tmp_path, RunMonitor(), train_dataset=SlowImages(n=96), max_steps=8)
    with caplog.at_level(logging.WARNING, logger="vit_hf.callbacks"):
        trainer.train()
    warnings = [r.getMessage() for r in caplog.records if "input-bound" in r.getMessage()]
    entries = training_entries(trainer)
    # Once per episode (3 windows in a row), not every window; a CPU hiccup may split the episode.
    assert 1 <= len(warnings) <= len(entries) // 3, warnings
    assert "dataloader_num_workers" in warnings[0] and "data.loader" in warnings[0]
    assert statistics.median(entry["data_wait_fraction"] for entry in entries[1:]) > InputBoundWatch().threshold


def test_a_fast_dataset_is_not_reported_input_bound(tmp_path, caplog):
    trainer = monitored(tmp_path, RunMonitor(), train_dataset=TinyImages(n=96), max_steps=8)
    with caplog.at_level(logging.WARNING, logger="vit_hf.callbacks"):
        trainer.train()
    assert not [r for r in caplog.records if "input-bound" in r.getMessage()]


def test_the_input_bound_warning_fires_once_per_episode():
    watch = InputBoundWatch(threshold=0.1, windows=3)
    fired = [watch.observe(f) for f in [0.5, 0.5, 0.5, 0.5, 0.05, 0.5, 0.5, 0.5]]
    assert fired == [False, False, True, False, False, False, False, True]


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




@pytest.mark.parametrize("loader", ["device", "memory"])
def test_input_bound_advice_for_a_gather_store_names_no_worker_option(loader):
    # Such a store runs without workers: advice to add workers or keep them alive could not be followed.
    advice = input_bound_advice(0.4, 3, loader, workers=0, persistent=False)
    assert "dataloader_num_workers" not in advice and "persistent_workers" not in advice
    assert f"data.loader {loader}" in advice


def test_input_bound_advice_for_workers_says_what_helps():
    advice = input_bound_advice(0.4, 3, "decode", workers=2, persistent=False)
    assert "now 2" in advice and "persistent_workers: true" in advice and "data.loader: memory" in advice
    assert "persistent_workers" not in input_bound_advice(0.4, 3, "mmap", workers=0, persistent=False)
