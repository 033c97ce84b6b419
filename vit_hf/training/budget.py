"""The wall-clock budget: when training stops, and where the learning rate is on the way there.

Details: docs/DESIGN.md, "The time budget".
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from ..recipe.durations import format_duration
from .distributed import AGREE_EVERY, agree, device_of, is_agreement_step, world_size
from .steps import StepClock

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


# Evaluations not yet measured whole are estimated high: a late stop costs the budget, an early one a
# few steps. 25% over a guess from the training speed. The rate timed on a few full-size evaluation
# batches before training (the probe) is taken as it is: on a 2-core CPU the whole final evaluation ran
# 10-25% faster than the probe said (CIFAR-10, batch 512), and the margin below covers a slower one.
EVAL_SAFETY = 1.25
PROBED_EVAL_SAFETY = 1.0
# confusion_matrix.png, curves.png and the model card after the final save, matplotlib's import included:
# 0.75 s measured on a 2-core CPU.
ARTIFACT_SECONDS = 1.0
# The probe: a warm-up batch, then this many timed ones, at the evaluation's own batch size.
PROBE_BATCHES = 2
# Timed steps after which the training speed is the reference for the probed evaluation's cost: enough
# for the running step time to settle past the first steps' allocations.
PROBE_REFERENCE_STEPS = 5
# What is kept back beyond the estimates, as a share of the budget (at least MARGIN_SECONDS): the run ends
# within about this share of its budget, early rather than late.
MARGIN_SHARE, MARGIN_SECONDS = 0.005, 1.0


@dataclass
class TimeBudget:
    """`seconds` of budget time for the whole run; budget time is wall time summed over restarts."""

    seconds: float
    started_at: float  # clock() when this process started
    clock: Clock = time.monotonic
    spent_before: float = 0.0  # budget time spent by the runs this one resumes
    train_start: float | None = None  # budget time at which training first began
    reserve: float = 0.0  # seconds kept back for the final evaluation, save and push
    step_seconds: float = 0.0  # running estimate of one optimizer step, data wait included
    progress: float = 0.0  # schedule progress agreed for the coming step (see BudgetCallback)
    # Budget seconds inside the training span that are no training progress: each process's first step
    # (loader start, allocation, kernel selection, torch.compile), so warmup and decay follow real steps.
    paused: float = 0.0

    def spent(self) -> float:
        return self.spent_before + self.clock() - self.started_at

    def remaining(self) -> float:
        return self.seconds - self.spent()

    @property
    def stop_training_at(self) -> float:
        return self.seconds - self.reserve

    def progress_at(self, spent: float) -> float:
        """Fraction of the training time used at budget time `spent`, in [0, 1]."""
        if self.train_start is None:
            return 0.0
        span = self.stop_training_at - self.train_start - self.paused
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (spent - self.train_start - self.paused) / span))

    def state(self) -> dict[str, float | None]:
        """What a checkpoint keeps, so that a resumed run continues on the same clock and curve."""
        return {"spent": self.spent(), "train_start": self.train_start, "paused": self.paused}

    def restore(self, state: dict[str, float | None]) -> None:
        self.spent_before = float(state.get("spent") or 0.0)
        self.train_start = state.get("train_start")
        self.paused = float(state.get("paused") or 0.0)


@dataclass
class ReserveEstimate:
    """What the end of the run costs: final evaluation + save (+ push), plus a safety margin.

    Before anything is measured: an evaluation forward costs about a third of a training step per
    image (no backward, no optimizer), plus its data-loader start-up; a save writes the weights at
    a conservative 100 MB/s. Measured evaluations and saves replace these estimates.
    """

    eval_images: int
    budget_seconds: float
    model_bytes: int = 0
    loader_workers: int = 0
    pushes: bool = False
    eval_seconds: float | None = None  # measured, once an evaluation has run
    eval_seconds_per_image: float | None = None  # measured on a few batches before training
    save_seconds: float | None = None  # measured, once a checkpoint was saved
    # torch.compile: the final evaluation compiles its own graphs (eval mode, its batch shapes) unless an
    # evaluation already did. Allowance: the compile measured in the first training step (forward and
    # backward), which covers the forward-only graphs of the evaluation.
    compile_seconds: float = 0.0
    # Seconds per training image when the evaluation's cost was timed (the first steady steps, for the probe).
    # A machine that slows down later (other work on it, throttling) slows the evaluation alike: measured on
    # a shared 2-core CPU, a probe of 241 img/s became 180 img/s at the end of a 10-minute run.
    timed_at_train_seconds_per_image: float | None = None

    @property
    def startup_seconds(self) -> float:
        """An evaluation's DataLoader start: worker processes fork and import (~0.5 s each here)."""
        return 0.2 + 0.5 * self.loader_workers

    def evaluation(self, seconds_per_train_image: float) -> float:
        if self.eval_seconds is not None:
            return self.eval_seconds * self.slowdown(seconds_per_train_image)
        if self.eval_seconds_per_image is not None:
            estimate = PROBED_EVAL_SAFETY * self.eval_images * self.eval_seconds_per_image
            estimate *= self.slowdown(seconds_per_train_image)
        else:
            estimate = EVAL_SAFETY * self.eval_images * seconds_per_train_image / 3
        return self.startup_seconds + estimate + self.compile_seconds

    def slowdown(self, seconds_per_train_image: float) -> float:
        """How much slower training runs now than when the evaluation was timed (clamped to [0.5, 4])."""
        reference = self.timed_at_train_seconds_per_image
        if not reference or seconds_per_train_image <= 0:
            return 1.0
        return min(4.0, max(0.5, seconds_per_train_image / reference))

    def seconds(self, seconds_per_train_image: float) -> float:
        save = self.save_seconds if self.save_seconds is not None else 0.5 + self.model_bytes / 100e6
        push = 20.0 + self.model_bytes / 10e6 if self.pushes else 0.0
        margin = max(MARGIN_SECONDS, MARGIN_SHARE * self.budget_seconds)
        return self.evaluation(seconds_per_train_image) + save + ARTIFACT_SECONDS + push + margin


def measure_eval_seconds_per_image(trainer, eval_set) -> float:
    """Seconds per image of an evaluation forward (decode + transfer + model), timed before training on a
    few batches of the evaluation's own size, with the model in eval mode.

    The final evaluation is often the largest part of the reserve (10,000 CIFAR images take ~6 s on a
    2-core CPU); knowing its cost from the first step on keeps the schedule's span right, instead of
    discovering it mid-run and jumping to the end of the curve.
    """
    batch = trainer.args.per_device_eval_batch_size
    n = batch * (1 + PROBE_BATCHES)
    subset = eval_set.take(n) if not hasattr(eval_set, "__len__") else _head(eval_set, n)
    loader = DataLoader(subset, batch_size=batch, collate_fn=trainer.data_collator)
    timings, images = [], []
    trainer.model.eval()
    with torch.no_grad():
        for inputs in _timed(loader, timings):
            trainer.prediction_step(trainer.model, inputs, prediction_loss_only=False)
            synchronize_device()
            images.append(len(inputs["labels"]))
    trainer.model.train()
    # The first batch pays one-off costs (allocation, kernel selection); the rest are steady.
    timed = slice(1, None) if len(timings) > 1 else slice(None)
    return sum(timings[timed]) / max(1, sum(images[timed]))


def _head(dataset, n: int):
    if hasattr(dataset, "select"):
        return dataset.select(range(min(n, len(dataset))))
    return torch.utils.data.Subset(dataset, range(min(n, len(dataset))))


def _timed(loader, timings: list[float]):
    """Yield the loader's batches; append each batch's wall time (fetch + work) to `timings`."""
    start = time.perf_counter()
    for batch in loader:
        yield batch
        now = time.perf_counter()
        timings.append(now - start)
        start = now


def synchronize_device() -> None:
    """Wait for the GPU's queued work, so a host clock reads what it ran (shared with the planner's probe)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class BudgetCallback(TrainerCallback):
    """Stops training when the budget's training time is spent, and sets the schedule's progress.

    Order within a step (transformers 5.24): optimizer step, scheduler step (reads budget.progress),
    on_step_end here. At the end of step k this sets the progress for the rate the scheduler computes
    in step k+1, which step k+2 uses (and logs): so progress is read two steps ahead. When the
    training time would run out within three steps, the run ends two steps later and the progress
    is pinned to 1 meanwhile: the last step trains, and is logged, at the schedule's end value.
    """

    budget: TimeBudget
    reserve: ReserveEstimate
    images_per_step: int
    epoch_images: int | None = None  # train-set size, when known (not for streams)
    compiles: bool = False  # training.torch_compile: the first step compiles, and so will the first evaluation
    steps: StepClock | None = None  # the run's step clock (monitor.py); None: one of its own, on the budget's clock
    stopped_by_budget: bool = False
    _owns_steps: bool = False
    _paused_first_step: bool = False
    _phase_start: float | None = None
    _steps_timed: int = 0
    _last_step: int | None = None  # the step the budget ends training at, once known
    _announced: bool = False
    _agreed: tuple[int, float, float] = (0, 0.0, 0.0)  # (step, progress, progress per step) agreed by the ranks
    _ranks: int = 1  # DDP world size, read once at train begin
    _no_eval: bool = False  # the ranks agreed to skip this step's evaluation

    def __post_init__(self):
        if self.steps is None:
            self.steps, self._owns_steps = StepClock(self.budget.clock), True

    def _forward(self, event: str, args, state, control) -> None:
        if self._owns_steps:
            getattr(self.steps, event)(args, state, control)

    def on_train_begin(self, args, state, control, **kwargs):
        self._forward("on_train_begin", args, state, control)
        self._ranks = world_size()
        now = self.budget.spent()
        if self.budget.train_start is None:
            self.budget.train_start = now
        self._update_reserve()
        (progress,), _ = agree([self.budget.progress_at(now)], [], device_of(args))  # one LR on every rank
        self._agreed = (state.global_step, progress, 0.0)
        self.budget.progress = progress
        self._warn_if_the_final_phase_dominates(now)
        logger.info(
            "budget %s: %s spent, %s left at the start of training, %s kept for the final evaluation and save",
            format_duration(self.budget.seconds),
            format_duration(now),
            format_duration(self.budget.remaining()),
            format_duration(self.budget.reserve),
        )

    def _warn_if_the_final_phase_dominates(self, now: float) -> None:
        training = self.budget.stop_training_at - now
        if training < 0.25 * (self.budget.seconds - now):
            logger.warning(
                "budget: the final evaluation and save (~%s) leave only %s of %s for training; "
                "data.max_eval_samples or a longer budget.time would leave more",
                format_duration(self.budget.reserve), format_duration(max(0.0, training)),
                format_duration(self.budget.seconds),
            )

    def on_step_begin(self, args, state, control, **kwargs):
        self._forward("on_step_begin", args, state, control)

    def on_step_end(self, args, state, control, **kwargs):
        self._forward("on_step_end", args, state, control)
        now = self.budget.spent()
        self._time_step()
        self._update_reserve()
        self._announce_fit(state)
        step = state.global_step
        skip_eval = control.should_evaluate and now + self._eval_estimate() >= self.budget.stop_training_at
        if is_agreement_step(step, self._ranks):
            self._agree_on_the_coming_steps(args, step, now, skip_eval)
        elif control.should_evaluate:  # the same step on every rank (evaluation steps are counted)
            (self._no_eval,), _ = agree([float(skip_eval)], [], device_of(args))
        self.budget.progress = self._progress_at_step(step)
        if self._no_eval and control.should_evaluate:
            self._skip_evaluation(control, state)
        if self._last_step is not None and step >= self._last_step:
            self._stop(control, state)
        self._phase_start = now

    def _agree_on_the_coming_steps(self, args, step: int, now: float, skip_eval: bool) -> None:
        """Rank 0's progress (two steps ahead: see the class docstring), its rate per step, the step training
        ends at when that falls before the next agreement, and whether to skip this step's evaluation.

        Training ends at the first step whose end is within three steps of stop_training_at, two steps later:
        without DDP the check runs at every step, with it once per AGREE_EVERY steps, for all of them."""
        step_seconds = self.budget.step_seconds
        span = self.budget.stop_training_at - (self.budget.train_start or 0.0) - self.budget.paused
        per_step = step_seconds / span if span > 0 else 0.0
        last_step = -1.0
        if self._last_step is None and step_seconds > 0:
            steps_left = max(0, math.ceil((self.budget.stop_training_at - now) / step_seconds) - 3)
            if steps_left < self._window(step):
                last_step = float(step + steps_left + 2)
        elif self._last_step is None and self.budget.progress_at(now) >= 1.0:
            last_step = float(step + 2)  # no step time yet, and no training time left
        values = [self.budget.progress_at(now + 2 * step_seconds), per_step, last_step, float(skip_eval)]
        progress, per_step, last_step, no_eval = agree(values, [], device_of(args))[0] if self._ranks > 1 else values
        self._agreed = (step, progress, per_step)
        self._no_eval = bool(no_eval)
        if last_step >= 0 and self._last_step is None:
            self._last_step = int(last_step)

    def _window(self, step: int) -> int:
        """Steps until the next agreement."""
        return next(n for n in range(1, AGREE_EVERY + 1) if is_agreement_step(step + n, self._ranks))

    def _progress_at_step(self, step: int) -> float:
        """The progress the scheduler reads for the rate that step + 2 uses: 1 for the last step, else the
        agreed progress moved on by the agreed rate per step (the same on every rank)."""
        if self._last_step is not None and step >= self._last_step - 2:
            return 1.0
        agreed_step, progress, per_step = self._agreed
        return min(1.0, progress + (step - agreed_step) * per_step)

    def on_evaluate(self, args, state, control, **kwargs):
        self._forward("on_evaluate", args, state, control)  # not step time
        if self._phase_start is not None:
            self.reserve.eval_seconds = self.budget.spent() - self._phase_start
            self.reserve.timed_at_train_seconds_per_image = self._seconds_per_train_image() or None
            self._phase_start = self.budget.spent()

    def on_save(self, args, state, control, **kwargs):
        self._forward("on_save", args, state, control)
        if self._phase_start is not None:
            self.reserve.save_seconds = self.budget.spent() - self._phase_start

    def on_log(self, args, state, control, **kwargs):
        self._forward("on_log", args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        now = self.budget.spent()
        if control.should_evaluate:
            skip_eval = now + self._eval_estimate() >= self.budget.stop_training_at
            (no_eval,), _ = agree([float(skip_eval)], [], device_of(args))
            if no_eval:
                self._skip_evaluation(control, state)
        if self.stopped_by_budget:
            control.should_evaluate = False  # the run's final evaluation is next
            control.should_save = False
        self._phase_start = now

    def _skip_evaluation(self, control, state) -> None:
        # Training goes on to the budget's stop (the learning rate has not annealed yet); an
        # evaluation now would run into the reserve, and the final one follows anyway.
        if self.stopped_by_budget:
            control.should_evaluate = False
            return
        logger.info("budget: skipping the evaluation at step %d: it would not end before the final phase",
                    state.global_step)
        control.should_evaluate = False

    def _stop(self, control, state) -> None:
        if not self.stopped_by_budget:
            logger.info("budget: training time spent at step %d; final evaluation and save next", state.global_step)
        self.stopped_by_budget = True
        control.should_training_stop = True
        control.should_log = True  # the last step's learning rate goes into the log history
        control.should_evaluate = False
        control.should_save = False

    def _time_step(self) -> None:
        """The step clock's latest step into the running estimate; the first step into the pause."""
        if not self._paused_first_step:
            # This process's first step (loader start, first batch, allocation, kernel selection, torch.compile):
            # budget time, but not training progress (TimeBudget.paused).
            self._paused_first_step = True
            self.budget.paused += self.steps.first_step
            return
        self._steps_timed += 1
        # Recent steps weigh more, so throughput drift is followed.
        weight = 1.0 if self._steps_timed == 1 else 0.2
        self.budget.step_seconds += weight * (self.steps.last.cost - self.budget.step_seconds)
        if self._steps_timed == 1 and self.compiles:
            self.reserve.compile_seconds = max(0.0, self.steps.first_step - self.budget.step_seconds)
        if self._steps_timed == PROBE_REFERENCE_STEPS and self.reserve.eval_seconds is None:
            # The probe ran just before training: the machine's speed then is its speed in the first steps.
            self.reserve.timed_at_train_seconds_per_image = self._seconds_per_train_image()

    def _announce_fit(self, state) -> None:
        """Once throughput is measured: how many steps, images and epochs the budget buys."""
        if self._announced or self._steps_timed < 5 or self.budget.step_seconds <= 0:
            return
        self._announced = True
        steps = int(max(0.0, self.budget.stop_training_at - self.budget.spent()) / self.budget.step_seconds)
        images = steps * self.images_per_step
        epochs = f", ~{(state.epoch or 0) + images / self.epoch_images:.1f} epochs in all" if self.epoch_images else ""
        logger.info(
            "budget: %.1f images/s; ~%d more steps (~%d images) fit before the final phase%s",
            self.images_per_step / self.budget.step_seconds, steps, images, epochs,
        )

    def _seconds_per_train_image(self) -> float:
        return self.budget.step_seconds / max(1, self.images_per_step)

    def _eval_estimate(self) -> float:
        return self.reserve.evaluation(self._seconds_per_train_image())

    def _update_reserve(self) -> None:
        self.budget.reserve = self.reserve.seconds(self._seconds_per_train_image())
