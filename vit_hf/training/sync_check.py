"""extras.check_host_syncs: a run fails at the first host sync inside a steady training step.

Details: docs/DESIGN.md, "Host syncs".
"""

from __future__ import annotations

import logging
import sys

import torch
from torch.overrides import TorchFunctionMode
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

WARMUP_STEPS = 3  # the first steps allocate, select kernels, compile: not the steady state
HOST_READS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__index__"})


class HostSyncError(RuntimeError):
    """A training step read a tensor on the host (extras.check_host_syncs)."""


class HostReadDetector(TorchFunctionMode):
    """Raises HostSyncError at every tensor read that would synchronize with an accelerator."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS and not _called_from_the_dataloader():
            raise HostSyncError(
                f"Tensor.{name}() inside a steady training step: on a GPU it waits for the queue to drain "
                "(extras.check_host_syncs). The traceback shows where."
            )
        return func(*args, **(kwargs or {}))


def _called_from_the_dataloader() -> bool:
    """torch's DataLoader, its samplers and collation only ever read host tensors (a sampler's randperm):
    never a sync, on a GPU machine too. Frame 2 is the Python code that called the tensor method."""
    return sys._getframe(2).f_globals.get("__name__", "").startswith("torch.utils.data")


class HostSyncCheck(TrainerCallback):
    """Turns the check on at the end of each steady step and off before the steps that log, evaluate or save.

    Must be the last callback at on_step_end so that the other callbacks' flags for the step are final."""

    def __init__(self, warmup_steps: int = WARMUP_STEPS):
        self.warmup_steps = warmup_steps
        self.checked_steps = 0
        self._cuda = False
        self._detector: HostReadDetector | None = None
        self._on = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._cuda = args.device.type == "cuda"
        if args.world_size > 1:
            logger.warning("extras.check_host_syncs checks one process; with %d it is off", args.world_size)
            self.warmup_steps = None

    def on_step_end(self, args, state, control, **kwargs):
        if self._on:
            self.checked_steps += 1
        self._turn_off()
        busy = control.should_log or control.should_evaluate or control.should_save or control.should_training_stop
        if self.warmup_steps is not None and state.global_step >= self.warmup_steps and not busy:
            self._turn_on()

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self._turn_off()  # an epoch's end that logs, evaluates or saves

    def on_train_end(self, args, state, control, **kwargs):
        self._turn_off()
        logger.info("extras.check_host_syncs: %d steady training steps ran without a host sync", self.checked_steps)

    def close(self) -> None:
        """Off, whatever happened: call it when training ends by an exception (callbacks then get no event)."""
        self._turn_off()

    def _turn_on(self) -> None:
        if self._cuda:
            torch.cuda.set_sync_debug_mode("error")
        else:
            self._detector = HostReadDetector()
            self._detector.__enter__()
        self._on = True

    def _turn_off(self) -> None:
        if not self._on:
            return
        if self._cuda:
            torch.cuda.set_sync_debug_mode("default")
        elif self._detector is not None:
            self._detector.__exit__(None, None, None)
            self._detector = None
        self._on = False
