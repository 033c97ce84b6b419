"""How training stops early on purpose: signals (SIGTERM, SIGINT), and non-finite losses.

Details: docs/DESIGN.md, "Signals and non-finite losses".
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import sys

import torch
from transformers import TrainerCallback

from ..errors import TrainingDiverged

logger = logging.getLogger(__name__)

class GracefulStop:
    """Within `with GracefulStop() as stop:`, the first SIGTERM/SIGINT sets `stop.requested()`; a second
    takes the signal's default action at once.

    DataLoader workers forked inside the block inherit the handler, so a signal sent to the whole
    process group (Ctrl-C, SLURM) does not kill them under the main process mid-step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "GracefulStop":
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        # Not logging: a handler can interrupt the logging module while it holds its lock.
        sys.stderr.write(
            f"\n{signal.Signals(signum).name} received: stopping after this step with a checkpoint; "
            "send it again to exit at once\n"
        )


MAX_NONFINITE_IN_A_ROW = 10


class HostCopies:
    """Small device tensors read on the host without a sync, in the order they were sent.

    `send(value, tag)` copies into a pinned buffer asynchronously and records an event; `finished()` hands
    back the (tag, value) pairs whose copies are done, oldest first, never waiting. On a CPU a copy is done
    at once. Buffers and events are reused: at most as many as copies in flight (a step or two)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._pending: collections.deque = collections.deque()  # (tag, buffer, event), oldest first
        self._free: list = []

    def send(self, value: torch.Tensor, tag) -> None:
        if self._free:
            buffer, event = self._free.pop()
        else:
            buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=self.cuda)
            event = torch.cuda.Event() if self.cuda else None
        buffer.copy_(value, non_blocking=self.cuda)
        if event is not None:
            event.record()
        self._pending.append((tag, buffer, event))

    def finished(self) -> list[tuple[object, float]]:
        """The copies done so far (numpy reads host memory: never a device sync)."""
        done = []
        while self._pending and (self._pending[0][2] is None or self._pending[0][2].query()):
            tag, buffer, event = self._pending.popleft()
            done.append((tag, float(buffer.numpy())))
            self._free.append((buffer, event))
        return done

    def wait(self) -> list[tuple[object, float]]:
        """Every copy (a sync: for the end of training)."""
        for _, _, event in self._pending:
            if event is not None:
                event.synchronize()
        return self.finished()


def supports_device_skip(optimizer) -> bool:
    """Whether the torch optimizer skips an update on the device when given `found_inf` (fused kernels).

    `_step_supports_amp_scaling` is the flag torch's GradScaler reads for the same purpose."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


class NonFiniteGuard(TrainerCallback):
    """Told each update's gradient norm (`check`); at a step's end, goes on or stops as its policy says."""

    def __init__(self, policy: str = "stop"):
        self.policy = policy
        self.stopped_at: int | None = None
        self.in_a_row = 0
        self.last_step: int | None = None  # the step of the latest non-finite update seen
        self.host_checked = False  # the optimizer cannot skip updates on the device: checked on the host
        self._loss_scaled = False
        self._copies: HostCopies | None = None

    def check(self, grad_norm, optimizer, step: int, loss_scaled: bool = False) -> None:
        """Record this update's norm; make the optimizer skip it (on the device) if it is not finite.

        `optimizer` is the torch optimizer about to step; `step` the global step this update makes. Two small
        kernels a step (isfinite, and the flag as the optimizer takes it) and an asynchronous copy of the flag:
        the counting is the host's, when the copy arrives."""
        self._loss_scaled = loss_scaled
        if not torch.is_tensor(grad_norm):  # DeepSpeed hands a float
            grad_norm = torch.tensor(float("nan") if grad_norm is None else grad_norm)
        found_inf = (~torch.isfinite(grad_norm.detach())).to(torch.float32)
        if not loss_scaled:  # under loss scaling the GradScaler sets found_inf itself
            self._drop_if(found_inf, optimizer)
        if self._copies is None:
            self._copies = HostCopies(found_inf.device)
        self._copies.send(found_inf, step)

    def _drop_if(self, found_inf: torch.Tensor, optimizer) -> None:
        if supports_device_skip(optimizer):
            optimizer.found_inf = found_inf
            return
        if not self.host_checked:
            self.host_checked = True
            logger.info("%s cannot skip a non-finite update on the device: its gradient norm is read on the host "
                        "at each step (a sync); a fused optimizer (training.optim: adamw_torch_fused) avoids it",
                        type(optimizer).__name__)
        if bool(found_inf):
            optimizer.zero_grad(set_to_none=True)  # torch optimizers leave a parameter without a gradient alone

    def _count(self, flags: list[tuple[object, float]]) -> int:
        """Count the updates the host has heard of; the number of non-finite ones among them."""
        new = 0
        for step, bad in flags:
            if bad:
                new += 1
                self.in_a_row += 1
                self.last_step = step
            else:
                self.in_a_row = 0
        return new

    def on_step_end(self, args, state, control, **kwargs):
        if self._copies is not None:
            self._act_on(self._count(self._copies.finished()), state, control)

    def on_train_end(self, args, state, control, **kwargs):
        if self._copies is not None:
            late = self._count(self._copies.wait())
            if late:
                logger.warning("%d non-finite update(s) in the last steps were not applied (the latest at step %d)",
                               late, self.last_step)

    def _act_on(self, new: int, state, control) -> None:
        if not new:
            return
        if self.in_a_row < MAX_NONFINITE_IN_A_ROW and (self.policy == "skip" or self._loss_scaled):
            if not self._loss_scaled:
                logger.warning("step %d: non-finite loss or gradient; its update was not applied, training goes on "
                               "(early_stopping.on_nonfinite_loss: skip)%s", self.last_step,
                               f" ({new} such updates since the last report)" if new > 1 else "")
            return
        self.stopped_at = state.global_step
        logger.error("step %d: non-finite loss or gradient; its update was not applied. Saving checkpoint-%d, "
                     "whose weights never received a non-finite update, and stopping", self.last_step,
                     state.global_step)
        control.should_training_stop = True
        control.should_save = True
        control.should_evaluate = False

    def diverged_message(self, output_dir: str) -> str:
        in_a_row = f" ({self.in_a_row} updates in a row)" if self.in_a_row > 1 else ""
        return (
            f"training stopped at step {self.stopped_at}: non-finite loss or gradient at step {self.last_step}"
            f"{in_a_row}. No such update was applied: {output_dir}/checkpoint-{self.stopped_at} holds weights that "
            "never received one. Lower training.learning_rate, lengthen training.warmup_steps or set "
            "training.max_grad_norm; early_stopping.on_nonfinite_loss: skip rides out isolated spikes. Rerunning "
            "resumes from that checkpoint."
        )


def train_guarded(run, checkpoint: str | None) -> None:
    """run.trainer.train(), watched by run.guard (one of its callbacks); TrainingDiverged (exit 4) once the
    guard's checkpoint is saved. The host-sync check, if on, is switched off however training ends."""
    try:
        run.trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if run.sync_check is not None:
            run.sync_check.close()
    if run.guard.stopped_at is not None:
        raise TrainingDiverged(run.guard.diverged_message(run.trainer.args.output_dir))
