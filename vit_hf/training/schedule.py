"""The learning rate on a budget: warmup then decay, as a function of budget progress (see budget.py
for why progress, not a step count). `LrShape` reads its shape from TrainingArguments
(lr_scheduler_type, warmup_steps, lr_scheduler_kwargs); `budget_lr_scheduler` is the LambdaLR that
VitTrainer uses in place of the Trainer's when there is a budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch.optim.lr_scheduler import LambdaLR

from ..recipe.schema import BUDGET_SCHEDULES


@dataclass
class LrShape:
    """Warmup then decay to min_ratio, as a function of progress in [0, 1] (and steps, for step warmup)."""

    kind: str = "cosine"  # cosine | linear | constant
    warmup_fraction: float = 0.0  # warmup as a fraction of the budget (training.warmup_steps < 1)
    warmup_steps: int = 0  # or as steps (training.warmup_steps >= 1)
    min_ratio: float = 0.0

    def factor(self, progress: float, step: int) -> float:
        warm = self._warmup(progress, step)
        if warm < 1.0:
            return warm
        if self.kind == "constant":
            return 1.0
        span = 1.0 - self.warmup_fraction
        done = 1.0 if span <= 0 else min(1.0, max(0.0, (progress - self.warmup_fraction) / span))
        decay = 0.5 * (1.0 + math.cos(math.pi * done)) if self.kind == "cosine" else 1.0 - done
        return self.min_ratio + (1.0 - self.min_ratio) * decay

    def _warmup(self, progress: float, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.warmup_fraction > 0 and progress < self.warmup_fraction:
            return max(progress / self.warmup_fraction, 1e-3)
        return 1.0




def lr_shape_from_args(args) -> LrShape:
    """The LrShape that TrainingArguments describe (lr_scheduler_type, warmup_steps, lr_scheduler_kwargs)."""
    kind = BUDGET_SCHEDULES[str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))]
    kwargs = args.lr_scheduler_kwargs or {}
    min_ratio = kwargs.get("min_lr_rate")
    if min_ratio is None and kwargs.get("min_lr") is not None:
        min_ratio = kwargs["min_lr"] / args.learning_rate
    warmup = float(args.warmup_steps or 0)
    return LrShape(
        kind=kind,
        warmup_fraction=warmup if 0 < warmup < 1 else 0.0,
        warmup_steps=int(warmup) if warmup >= 1 else 0,
        min_ratio=float(min_ratio or 0.0),
    )


def budget_lr_scheduler(optimizer, shape: LrShape, progress: Callable[[], float], num_training_steps: int) -> LambdaLR:
    """A LambdaLR at shape.factor of the larger of two fractions: budget progress (read from `progress()`,
    which BudgetCallback sets and the DDP ranks agree on) and steps over num_training_steps, whichever
    limit comes first."""

    def factor(step: int) -> float:
        return shape.factor(max(progress(), step / max(1, num_training_steps)), step)

    return LambdaLR(optimizer, factor)
