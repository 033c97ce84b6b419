"""The time budget: durations, the budget-mapped learning rate, the stop decision (a fake clock, no sleeps)."""

from __future__ import annotations

import math

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from vit_hf.recipe.durations import format_duration, parse_duration
from vit_hf.training.budget import BudgetCallback, ReserveEstimate, TimeBudget
from vit_hf.training.schedule import LrShape, lr_shape_from_args


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


def test_progress_maps_budget_time_to_the_training_span():
    clock = FakeClock()
    budget = TimeBudget(seconds=100, started_at=clock.now, clock=clock, reserve=10)
    clock.now += 10  # data loading, model building
    budget.train_start = budget.spent()
    assert budget.progress_at(budget.spent()) == 0.0
    clock.now += 40  # half of the 80 s between training start and stop_training_at
    assert budget.progress_at(budget.spent()) == pytest.approx(0.5)
    assert budget.progress_at(budget.spent() + 100) == 1.0


def test_a_resumed_budget_continues_the_clock_and_the_curve():
    clock = FakeClock()
    first = TimeBudget(seconds=100, started_at=clock.now, clock=clock, reserve=10)
    clock.now += 10
    first.train_start = first.spent()
    clock.now += 50  # killed here, at 60 s of budget time
    saved = first.state()
    clock.now += 1000  # the machine is down for a while: that does not count
    second = TimeBudget(seconds=100, started_at=clock.now, clock=clock, reserve=10)
    second.restore(saved)
    assert second.spent() == pytest.approx(60) and second.remaining() == pytest.approx(40)
    assert second.progress_at(second.spent()) == pytest.approx(first.progress_at(60))


class SchedulerLoop:
    """transformers 5.24's step: the step trains (and logs) at the current rate; then the scheduler
    computes the next rate from budget.progress; then on_step_end. `factors` are the rates used."""

    def __init__(self, callback: BudgetCallback, clock: FakeClock, shape: LrShape = LrShape(),
                 first_step_seconds: float | None = None):
        self.callback, self.clock, self.shape = callback, clock, shape
        self.first_step_seconds = first_step_seconds  # e.g. torch.compile's
        self.state, self.control, self.factors = TrainerState(), TrainerControl(), []

    def run(self, step_seconds: float, max_steps: int = 100_000) -> int:
        self.callback.on_train_begin(None, self.state, self.control)
        rate = self.shape.factor(self.callback.budget.progress, 0)  # LambdaLR computes one at creation
        for step in range(1, max_steps + 1):
            self.callback.on_step_begin(None, self.state, self.control)
            first = step == 1 and self.first_step_seconds is not None
            self.clock.now += self.first_step_seconds if first else step_seconds
            self.factors.append(rate)
            rate = self.shape.factor(self.callback.budget.progress, step)
            self.state.global_step = step
            self.callback.on_step_end(None, self.state, self.control)
            if self.control.should_training_stop:
                return step
        return max_steps


def test_training_stops_so_the_final_phase_fits_inside_the_budget():
    clock = FakeClock()
    budget = TimeBudget(seconds=120, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=1000, budget_seconds=120, model_bytes=50_000_000, loader_workers=2)
    callback = BudgetCallback(budget=budget, reserve=reserve, images_per_step=100)
    loop = SchedulerLoop(callback, clock)
    loop.run(step_seconds=0.5)
    control = loop.control
    assert control.should_training_stop and control.should_log and callback.stopped_by_budget
    # evaluation: 1.2 s start-up (2 workers) + 1.25 * 1000 images * 5 ms / 3; save: 0.5 s + 50 MB at 100 MB/s;
    # plots and card 1 s; margin max(1 s, 0.5% of 120 s)
    final_phase = (0.2 + 2 * 0.5) + 1.25 * 1000 * 0.005 / 3 + (0.5 + 0.5) + 1.0 + max(1.0, 0.005 * 120)
    assert budget.spent() + final_phase <= budget.seconds + 1e-6
    assert budget.seconds - budget.spent() <= final_phase + 2 * 0.5 + 1e-6  # and at most two steps early
    assert loop.factors[-1] == 0.0  # the last step ran at the schedule's end


def test_measured_evaluation_replaces_the_estimate():
    clock = FakeClock()
    budget = TimeBudget(seconds=600, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=10_000, budget_seconds=600)
    callback = BudgetCallback(budget=budget, reserve=reserve, images_per_step=100)
    SchedulerLoop(callback, clock).run(step_seconds=1.0, max_steps=5)
    state, control = TrainerState(), TrainerControl()
    clock.now += 30  # an evaluation that took 30 s
    callback.on_evaluate(None, state, control)
    assert reserve.eval_seconds == pytest.approx(30)
    clock.now += 1.0  # the next step, as fast as before
    callback.on_step_end(None, state, control)
    assert budget.reserve == pytest.approx(30 + 0.5 + 1.0 + 0.005 * 600)


def test_a_probed_evaluation_is_kept_longer_when_the_machine_slows_down():
    clock = FakeClock()
    budget = TimeBudget(seconds=600, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=10_000, budget_seconds=600, eval_seconds_per_image=0.001)
    callback = BudgetCallback(budget=budget, reserve=reserve, images_per_step=100)
    loop = SchedulerLoop(callback, clock)
    loop.run(step_seconds=1.0, max_steps=20)
    kept = budget.reserve  # 10 s of evaluation at the probed rate, and the rest
    assert kept == pytest.approx(0.2 + 10 + 0.5 + 1.0 + 3.0)
    loop.run(step_seconds=2.0, max_steps=40)  # other work on the machine: training runs at half speed
    assert budget.reserve == pytest.approx(kept + 10, rel=0.02)  # and so will the evaluation


def test_an_evaluation_that_would_run_into_the_reserve_is_skipped():
    clock = FakeClock()
    budget = TimeBudget(seconds=100, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=100, budget_seconds=100, eval_seconds=20.0)
    callback = BudgetCallback(budget=budget, reserve=reserve, images_per_step=10)
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(None, state, control)
    clock.now = budget.started_at + budget.stop_training_at - 10  # 10 s of training left, an evaluation takes 20
    control.should_evaluate = True
    callback.on_step_end(None, state, control)
    assert not control.should_evaluate  # skipped: the final evaluation follows anyway
    assert not control.should_training_stop  # but training goes on, to anneal to the budget's end


@pytest.mark.parametrize("step_seconds", [0.37, 2.9, 7.0])
def test_lr_reaches_its_minimum_exactly_at_the_last_step(step_seconds):
    clock = FakeClock()
    budget = TimeBudget(seconds=60, started_at=clock.now, clock=clock)
    callback = BudgetCallback(budget, ReserveEstimate(eval_images=10, budget_seconds=60), images_per_step=8)
    loop = SchedulerLoop(callback, clock, LrShape(kind="cosine", warmup_fraction=0.05))
    loop.run(step_seconds)
    assert loop.factors[-1] == 0.0
    assert max(loop.factors) == pytest.approx(1.0, abs=0.05 if step_seconds < 1 else 0.5)
    assert budget.spent() <= budget.stop_training_at + 1e-6
    assert all(math.isfinite(f) for f in loop.factors)


def test_a_compiling_first_step_is_no_training_progress_and_the_final_evaluation_keeps_its_compile_time():
    clock = FakeClock()
    budget = TimeBudget(seconds=600, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=1000, budget_seconds=600, eval_seconds_per_image=0.001)
    callback = BudgetCallback(budget, reserve, images_per_step=100, compiles=True)
    loop = SchedulerLoop(callback, clock, LrShape(kind="cosine", warmup_fraction=0.05), first_step_seconds=60)
    loop.run(step_seconds=0.5, max_steps=3)
    assert budget.paused == pytest.approx(60) and reserve.compile_seconds == pytest.approx(59.5)
    # Two real steps in: the warmup (5% of ~470 s of training) has barely begun; counted from
    # on_train_begin it would be 61 s in, past it.
    assert budget.progress_at(budget.spent()) == pytest.approx(1.0 / (budget.stop_training_at - 60), rel=1e-3)
    assert loop.factors[-1] < 0.05
    assert "paused" in budget.state() and budget.state()["paused"] == pytest.approx(60)


def test_with_a_compiling_first_step_the_run_still_ends_inside_the_budget_at_the_minimum():
    clock = FakeClock()
    budget = TimeBudget(seconds=300, started_at=clock.now, clock=clock)
    reserve = ReserveEstimate(eval_images=500, budget_seconds=300, eval_seconds_per_image=0.002)
    callback = BudgetCallback(budget, reserve, images_per_step=100, compiles=True)
    loop = SchedulerLoop(callback, clock, LrShape(kind="cosine", warmup_fraction=0.05), first_step_seconds=40)
    loop.run(step_seconds=0.25)
    assert loop.factors[-1] == 0.0 and max(loop.factors) == pytest.approx(1.0, abs=0.01)
    final_phase = reserve.evaluation(0.0025)
    assert final_phase >= 40  # the first evaluation compiles too
    assert budget.spent() + final_phase <= budget.seconds
