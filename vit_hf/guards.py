"""A non-finite loss never reaches the weights, and never silently ruins a run.

    train_guarded(trainer, recipe.early_stopping.on_nonfinite_loss, checkpoint)

The Trainer computes each update's gradient norm anyway (for clipping and logging);
`VitTrainer._get_grad_norm` hands it to `NonFiniteGuard.check`. A NaN or infinite loss makes NaN
gradients, so a non-finite norm catches both. Such an update is dropped: the gradients are set to
None, and torch's optimizers leave a parameter without a gradient untouched (no step, no weight
decay, no moment update), so the weights stay the last good ones. Under fp16 loss scaling, the
GradScaler skips those updates itself and shrinks its scale; isolated overflows are its normal
working, so there only a run of them counts.

Then, at the step's end: `stop` (default) saves a checkpoint of those last good weights and ends
training (exit code 4); `skip` logs the step and goes on, and stops the same way after
MAX_NONFINITE_IN_A_ROW in a row, as a run stuck on NaN has diverged.

Cost: one device-to-host read of the norm per optimizer step. The Trainer already reads every
micro-step's loss (its logging_nan_inf_filter), so the device has been waited for anyway.
"""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

from .exits import TrainingDiverged

logger = logging.getLogger(__name__)

MAX_NONFINITE_IN_A_ROW = 10


class NonFiniteGuard(TrainerCallback):
    """Told each update's gradient norm (`check`); at the step's end, goes on or stops as its policy says."""

    def __init__(self, policy: str = "stop"):
        self.policy = policy
        self.in_a_row = 0
        self.stopped_at: int | None = None
        self._nonfinite = False
        self._loss_scaled = False

    def check(self, grad_norm, loss_scaled: bool = False) -> bool:
        """Whether this update is non-finite and the caller must drop it (under fp16 loss scaling the scaler does)."""
        self._nonfinite = grad_norm is not None and not math.isfinite(float(grad_norm))
        self._loss_scaled = loss_scaled
        return self._nonfinite and not loss_scaled

    def on_step_end(self, args, state, control, **kwargs):
        if not self._nonfinite:
            self.in_a_row = 0
            return
        self._nonfinite = False
        self.in_a_row += 1
        step = state.global_step
        if self.in_a_row < MAX_NONFINITE_IN_A_ROW and (self.policy == "skip" or self._loss_scaled):
            if not self._loss_scaled:
                logger.warning("step %d: non-finite loss or gradient; its update was not applied, training goes on "
                               "(early_stopping.on_nonfinite_loss: skip)", step)
            return
        self.stopped_at = step
        logger.error("step %d: non-finite loss or gradient; its update was not applied. Saving the last good "
                     "weights in checkpoint-%d and stopping", step, step)
        control.should_training_stop = True
        control.should_save = True
        control.should_evaluate = False

    def diverged_message(self, output_dir: str) -> str:
        in_a_row = f" ({self.in_a_row} steps in a row)" if self.in_a_row > 1 else ""
        return (
            f"training stopped at step {self.stopped_at}: non-finite loss or gradient{in_a_row}. No such update was "
            f"applied: {output_dir}/checkpoint-{self.stopped_at} holds the weights of step "
            f"{self.stopped_at - self.in_a_row}, the last good ones. Lower training.learning_rate, lengthen "
            "training.warmup_steps or set training.max_grad_norm; early_stopping.on_nonfinite_loss: skip rides "
            "out isolated spikes. Rerunning resumes from that checkpoint."
        )


def train_guarded(trainer, on_nonfinite_loss: str, checkpoint: str | None) -> None:
    """trainer.train(), watched by a NonFiniteGuard; TrainingDiverged (exit 4) once its checkpoint is saved."""
    guard = NonFiniteGuard(on_nonfinite_loss)
    trainer.add_callback(guard)
    trainer.train(resume_from_checkpoint=checkpoint)
    if guard.stopped_at is not None:
        raise TrainingDiverged(guard.diverged_message(trainer.args.output_dir))


def nonfinite_guard_of(trainer) -> NonFiniteGuard | None:
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, NonFiniteGuard)), None)
