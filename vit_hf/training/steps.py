"""The one clock of a run's training steps (StepClock): the first step apart, then each step's busy time,
data wait and cost, which the monitor (images/s, data-wait fraction) and the budget (the time a step
costs) read."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from transformers import TrainerCallback


@dataclass
class StepTime:
    """One training step as the clock saw it (seconds)."""

    busy: float  # on_step_begin -> on_step_end: forward, backward, optimizer (on CUDA: queued)
    wait: float  # the previous step's end (or the last log, evaluation or save) -> on_step_begin: the batch fetch
    cost: float  # the previous step's end (or the last evaluation or save) -> this step's end: what it cost


class StepClock(TrainerCallback):
    """The one clock of a run's training steps: the first step apart (loader start, warm-up, compile), then
    each step's busy time, data wait and cost. RunMonitor and BudgetCallback read it; it comes before them
    in the callback list, so it is current when they look (each makes its own when used alone)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.first_step: float | None = None  # training's start -> the first step's end
        self.last: StepTime | None = None  # the latest step's; None until a second step ended
        self.steps = 0  # steps ended, the first included
        self._train_begin: float | None = None
        self._step_begin: float | None = None
        self._wait = 0.0
        self._wait_mark: float | None = None  # where the current data wait began
        self._cost_mark: float | None = None  # where the current step's cost began

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_begin = self.clock()

    def on_step_begin(self, args, state, control, **kwargs):
        now = self._step_begin = self.clock()
        self._wait = now - self._wait_mark if self._wait_mark is not None else 0.0

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        self.steps += 1
        if self.first_step is None:
            self.first_step = now - self._train_begin
        else:
            start = self._cost_mark if self._cost_mark is not None else self._step_begin
            self.last = StepTime(busy=now - self._step_begin, wait=self._wait, cost=now - start)
        self._wait_mark = self._cost_mark = now

    def on_log(self, args, state, control, **kwargs):
        # Logging is not data wait: on CUDA its loss.item() even waits for the GPU to finish the step.
        self._restart(wait=True)

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart(wait=True, cost=True)  # an evaluation between two steps is neither wait nor step cost

    def on_predict(self, args, state, control, **kwargs):
        self._restart(wait=True, cost=True)

    def on_save(self, args, state, control, **kwargs):
        self._restart(wait=True, cost=True)

    def _restart(self, wait: bool = False, cost: bool = False) -> None:
        now = self.clock()
        if wait and self._wait_mark is not None:
            self._wait_mark = now
        if cost and self._cost_mark is not None:
            self._cost_mark = now
