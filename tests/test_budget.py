"""The time budget: durations, the budget-mapped learning rate, the stop decision (a fake clock, no sleeps)."""

from __future__ import annotations

import math

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from vit_hf.budget import BudgetCallback, LrShape, ReserveEstimate, TimeBudget, lr_shape_from_args
from vit_hf.durations import format_duration, parse_duration


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("45m", 2700), ("24h", 86400), ("1.5h", 5400), ("2h30m", 9000), (20, 20), ("12", 12)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "10 parsecs", "-5s", 0, True, "5x"])
def test_parse_duration_rejects_with_the_accepted_forms(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration():
    assert format_duration(3723) == "1h02m03s" and format_duration(65) == "1m05s" and format_duration(9) == "9s"


def test_cosine_over_the_budget_hits_warmup_end_half_and_minimum():
    shape = LrShape(kind="cosine", warmup_fraction=0.1, min_ratio=0.01)
    assert shape.factor(0.0, 0) == pytest.approx(1e-3)  # warmup starts near zero, never exactly
    assert shape.factor(0.05, 10) == pytest.approx(0.5)
    assert shape.factor(0.1, 20) == pytest.approx(1.0)
    assert shape.factor(0.55, 50) == pytest.approx(0.01 + 0.99 * 0.5)  # halfway through the decay
    assert shape.factor(1.0, 99) == pytest.approx(0.01)


def test_linear_and_step_warmup():
    shape = LrShape(kind="linear", warmup_steps=4)
    assert [shape.factor(0.0, s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert shape.factor(0.5, 100) == pytest.approx(0.5)
    assert shape.factor(1.0, 200) == pytest.approx(0.0)


def test_shape_from_training_arguments(tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path), lr_scheduler_type="cosine_with_min_lr", warmup_steps=0.05,
        learning_rate=1e-3, lr_scheduler_kwargs={"min_lr": 1e-5},
    )
    shape = lr_shape_from_args(args)
    assert shape.kind == "cosine" and shape.warmup_fraction == 0.05 and shape.min_ratio == pytest.approx(0.01)


def test_progress_maps_wall_time_to_the_training_span():
    clock = FakeClock()
    budget = TimeBudget(seconds=100, started_at=clock.now, clock=clock, reserve=10)
    clock.now += 10  # data loading, model building
    budget.train_started_at = clock.now
    assert budget.training_progress() == 0.0
    clock.now += 40  # half of the 80 s between training start and stop_training_at
    assert budget.training_progress() == pytest.approx(0.5)
    budget.step_seconds = 2.0  # the rate set now serves the next step: one step of lookahead
    assert budget.training_progress() == pytest.approx(42 / 80)
    clock.now += 100
    assert budget.training_progress() == 1.0


def drive(callback: BudgetCallback, clock: FakeClock, step_seconds: float, max_steps: int = 10_000):
    """Simulate the Trainer's step loop; returns (steps taken, control)."""
    args, state, control = None, TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    for step in range(1, max_steps + 1):
        callback.on_step_begin(args, state, control)
        clock.now += step_seconds
        state.global_step = step
        callback.budget.last_progress = callback.budget.training_progress()  # what the scheduler does
        callback.on_step_end(args, state, control)
        if control.should_training_stop:
            return step, control
    return max_steps, control


def test_training_stops_so_the_final_phase_fits_inside_the_budget():
    clock = FakeClock()
    budget = TimeBudget(seconds=120, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=1000, budget_seconds=120, model_bytes=50_000_000, loader_workers=2)
    callback = BudgetCallback(budget=budget, reserve=reserve, images_per_step=100)
    steps, control = drive(callback, clock, step_seconds=0.5)
    assert control.should_training_stop and control.should_log and callback.stopped_by_budget
    # evaluation: 1.5 s start-up (2 workers) + 1.25 * 1000 images * 5 ms / 3; save: 0.5 s + 50 MB at 100 MB/s
    final_phase = (0.5 + 2 * 0.5) + 1.25 * 1000 * 0.005 / 3 + (0.5 + 0.5) + max(1.0, 0.02 * 120)
    assert clock.now + final_phase <= budget.deadline + 1e-6
    assert budget.deadline - clock.now <= final_phase + 0.5 + 1e-6  # and not much earlier than needed
    assert budget.last_progress >= 0.99


def test_measured_evaluation_replaces_the_estimate():
    clock = FakeClock()
    budget = TimeBudget(seconds=600, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=10_000, budget_seconds=600)
    callback = BudgetCallback(budget=budget, reserve=reserve, images_per_step=100)
    drive(callback, clock, step_seconds=1.0, max_steps=5)
    state, control = TrainerState(), TrainerControl()
    clock.now += 30  # an evaluation that took 30 s
    callback.on_evaluate(None, state, control)
    assert reserve.eval_seconds == pytest.approx(30)
    callback.on_step_end(None, state, control)
    assert budget.reserve == pytest.approx(30 + 0.5 + 0.02 * 600)


def test_an_evaluation_that_would_run_into_the_reserve_is_skipped():
    clock = FakeClock()
    budget = TimeBudget(seconds=100, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=100, budget_seconds=100, eval_seconds=20.0)
    callback = BudgetCallback(budget=budget, reserve=reserve, images_per_step=10)
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(None, state, control)
    clock.now = budget.stop_training_at - 10  # 10 s of training left, an evaluation takes 20
    control.should_evaluate = True
    callback.on_step_end(None, state, control)
    assert not control.should_evaluate and control.should_training_stop


def test_lr_reaches_its_minimum_exactly_at_the_stop():
    shape = LrShape(kind="cosine", warmup_fraction=0.05, min_ratio=0.0)
    clock = FakeClock()
    budget = TimeBudget(seconds=60, started_at=clock.now, clock=clock)
    callback = BudgetCallback(budget, ReserveEstimate(eval_images=10, budget_seconds=60), images_per_step=8)
    args, state, control = None, TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    factors = []
    for step in range(1, 10_000):
        callback.on_step_begin(args, state, control)
        clock.now += 0.37
        progress = budget.training_progress()
        budget.last_progress = progress
        factors.append(shape.factor(progress, step))
        callback.on_step_end(args, state, control)
        if control.should_training_stop:
            break
    assert factors[-1] == pytest.approx(0.0, abs=1e-9)
    assert max(factors) == pytest.approx(1.0, abs=0.01)
    assert all(math.isfinite(f) for f in factors)
