"""RunMonitor and BudgetProgressBar on a real Trainer: what a user sees in the logs, TensorBoard and the bar."""

from __future__ import annotations

import logging
import statistics
import time

import pytest
import torch
from transformers import ProgressCallback, TrainerCallback

from tests.helpers.trainers import SlowImages, TinyImages, monitored
from vit_hf.training.budget import TimeBudget
from vit_hf.training.monitor import (
    BudgetProgressBar,
    InputBoundWatch,
    RunMonitor,
    input_bound_advice,
    use_budget_progress_bar,
)


class Recorder(TrainerCallback):
    """Stands for a reporting integration: those are registered before any user callback."""

    def __init__(self):
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


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
    with caplog.at_level(logging.WARNING, logger="vit_hf.training.monitor"):
        trainer.train()
    warnings = [r.getMessage() for r in caplog.records if "input-bound" in r.getMessage()]
    entries = training_entries(trainer)
    # Once per episode (3 windows in a row), not every window; a CPU hiccup may split the episode.
    assert 1 <= len(warnings) <= len(entries) // 3, warnings
    assert "dataloader_num_workers" in warnings[0] and "data.loader" in warnings[0]
    assert statistics.median(entry["data_wait_fraction"] for entry in entries[1:]) > InputBoundWatch().threshold


def test_a_fast_dataset_is_not_reported_input_bound(tmp_path, caplog):
    trainer = monitored(tmp_path, RunMonitor(), train_dataset=TinyImages(n=96), max_steps=8)
    with caplog.at_level(logging.WARNING, logger="vit_hf.training.monitor"):
        trainer.train()
    assert not [r for r in caplog.records if "input-bound" in r.getMessage()]


def test_the_input_bound_warning_fires_once_per_episode():
    watch = InputBoundWatch(threshold=0.1, windows=3)
    fired = [watch.observe(f) for f in [0.5, 0.5, 0.5, 0.5, 0.05, 0.5, 0.5, 0.5]]
    assert fired == [False, False, True, False, False, False, False, True]


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
