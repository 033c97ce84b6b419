"""Writing checkpoints: by wall time as well as by steps, and never at the cost of the previous one.

Details: docs/DESIGN.md, "Checkpoints and failed saves".
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from safetensors import SafetensorError
from transformers import TrainerCallback

from ..errors import SaveFailed
from ..outputs.layout import is_complete, latest_checkpoint
from .distributed import agree, device_of, is_agreement_step

logger = logging.getLogger(__name__)

# budget.save_every: auto. Under 10 s, saving (model + optimizer) would eat a visible share of the
# time; over 30 min, a crash would cost too much.
AUTO_SAVE_MIN, AUTO_SAVE_MAX = 10.0, 1800.0

# Less free space than this after a failed write: the disk is full (a checkpoint needs far more).
NEARLY_FULL_BYTES = 16 * 2**20
# What a failed write raises, by writer (see the module docstring).
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


@dataclass
class CheckpointCallback(TrainerCallback):
    """Saves every `save_every` seconds of wall time, and saves then stops when a stop is requested."""

    save_every: float | None = None
    stop_requested: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.monotonic
    interrupted: bool = False
    _last_save: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_save = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if not is_agreement_step(state.global_step, args.world_size):  # DDP: every few steps (distributed.py)
            return
        due = self.save_every is not None and self.clock() - self._last_save >= self.save_every
        (save,), (stop,) = agree([float(due)], [self.stop_requested()], device_of(args))
        if save:
            control.should_save = True
        if stop:
            self._interrupt(control, state)

    def on_save(self, args, state, control, **kwargs):
        self._last_save = self.clock()

    def _interrupt(self, control, state) -> None:
        if not self.interrupted:
            logger.warning("stop requested: saving a checkpoint at step %d, then exiting", state.global_step)
        self.interrupted = True
        control.should_training_stop = True
        control.should_save = True
        control.should_evaluate = False


def resolve_save_every(save_every: float | str | None, budget_seconds: float | None) -> float | None:
    """budget.save_every in seconds; 'auto' is a tenth of the budget, kept between 10 s and 30 min."""
    if save_every != "auto":
        return save_every
    if budget_seconds is None:
        return None
    return min(max(budget_seconds / 10, AUTO_SAVE_MIN), AUTO_SAVE_MAX)


@contextlib.contextmanager
def guarded_save(folder: str | os.PathLike, output_dir: str | os.PathLike, what: str) -> Iterator[None]:
    """Run a save into `folder`; if it fails, remove what it left unless complete, and raise SaveFailed."""
    try:
        yield
    except WRITE_ERRORS as exc:
        folder = Path(folder)
        if folder.is_dir() and not is_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise SaveFailed(failure_message(exc, what, output_dir)) from exc


@contextlib.contextmanager
def guarded_final_save(output_dir: str | os.PathLike) -> Iterator[None]:
    """Save the final model into output_dir; if it fails, remove its weights (a truncated model must not
    sit next to a valid config.json, where pipeline() would load it) and raise SaveFailed."""
    try:
        yield
    except WRITE_ERRORS as exc:
        for weights in Path(output_dir).glob("model*.safetensors*"):
            weights.unlink(missing_ok=True)
        raise SaveFailed(failure_message(exc, "the final model", output_dir)) from exc


def failure_message(exc: BaseException, what: str, output_dir: str | os.PathLike) -> str:
    intact = latest_checkpoint(output_dir)
    kept = f"{Path(intact).name} is intact" if intact else "no earlier checkpoint exists"
    if is_disk_full(exc, output_dir):
        return (f"disk full while saving {what}; {kept}. Free space where training.output_dir is ({output_dir}), "
                "then rerun the same command: it resumes from the newest complete checkpoint")
    return (f"cannot write {what} ({type(exc).__name__}: {exc}); {kept}. Make training.output_dir ({output_dir}) "
            "writable, then rerun")


def is_disk_full(exc: BaseException, output_dir: str | os.PathLike) -> bool:
    """By the error, or, for writers that lose the errno (torch.save), by the space left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(text in str(exc) for text in ("No space left", "StorageFull", "Disk quota exceeded")):
        return True
    try:
        return shutil.disk_usage(output_dir).free < NEARLY_FULL_BYTES
    except OSError:
        return False
