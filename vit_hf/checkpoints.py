"""Never lose more than a little work: checkpoints by time, a graceful stop on signals, resuming.

The Trainer saves by steps or epochs; a 24-hour run with hour-long epochs would lose an hour to a
crash, so `budget.save_every` also saves by wall time. SLURM preemption and Ctrl-C send SIGTERM and
SIGINT: the first finishes the current step, saves a checkpoint (and pushes it when pushing), and
ends the run cleanly; a second exits at once. `resume: auto` continues from the newest complete
checkpoint in output_dir; `resume: hub` from the newest one pushed to `training.hub_model_id`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from .errors import RecipeError
from .sync import agree, device_of, is_agreement_step

logger = logging.getLogger(__name__)

BUDGET_STATE = "budget_state.json"
# budget.save_every: auto. Under 10 s, saving (model + optimizer) would eat a visible share of the
# time; over 30 min, a crash would cost too much.
AUTO_SAVE_MIN, AUTO_SAVE_MAX = 10.0, 1800.0
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Written last by Trainer._save_checkpoint: a folder without it was cut short (kill -9 mid-save).
_COMPLETE_MARKER = "trainer_state.json"


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
        if not is_agreement_step(state.global_step):  # DDP: decided every few steps (sync.py)
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


# --- Resuming ---------------------------------------------------------------------------------------


def latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` folder in output_dir, or None."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    for _, path in sorted(found, reverse=True):
        if (path / _COMPLETE_MARKER).is_file():
            return str(path)
        logger.warning("skipping %s: incomplete (no %s), probably cut short mid-save", path, _COMPLETE_MARKER)
    return None


def resolve_checkpoint(resume: str, args) -> str | None:
    """The checkpoint to resume from: training.resume_from_checkpoint, else what `resume` says."""
    if args.resume_from_checkpoint:
        return _existing(args.resume_from_checkpoint, "training.resume_from_checkpoint")
    if resume == "never":
        return None
    if resume == "auto":
        return _unfinished_run_checkpoint(args.output_dir)
    if resume == "hub":
        return download_hub_checkpoint(args)
    return _existing(resume, "resume")


def _unfinished_run_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint, unless output_dir holds a finished run (its final model is newer).

    Rerunning the command of a run that ended trains a new one: continuing a finished run, with its
    budget spent, would only evaluate it again. `resume: PATH` continues one on purpose."""
    checkpoint = latest_checkpoint(output_dir)
    final_model = Path(output_dir) / "model.safetensors"
    if checkpoint and final_model.is_file():
        if final_model.stat().st_mtime >= (Path(checkpoint) / _COMPLETE_MARKER).stat().st_mtime:
            logger.info("resume: %s holds a finished run; training a new one there", output_dir)
            return None
    return checkpoint


def _existing(path: str, key: str) -> str:
    if not (Path(path) / _COMPLETE_MARKER).is_file():
        raise RecipeError(f"{key}: {path!r} is not a complete Trainer checkpoint folder (no {_COMPLETE_MARKER})")
    return path


def download_hub_checkpoint(args) -> str | None:
    """The newest checkpoint pushed to hub_model_id (hub_strategy checkpoint or all_checkpoints), in output_dir."""
    from huggingface_hub import list_repo_files, snapshot_download

    repo = args.hub_model_id
    if not repo:
        raise RecipeError("resume: 'hub' needs training.hub_model_id, the repository the checkpoints were pushed to")
    files = list_repo_files(repo, token=args.hub_token)
    folder = _newest_pushed_checkpoint(files)
    if folder is None:
        logger.info("resume: hub: %s holds no checkpoint yet; starting from scratch", repo)
        return None
    with args.main_process_first(desc="resume: hub download"):  # DDP: one download, the other ranks reuse it
        snapshot_download(repo, allow_patterns=[f"{folder}/*"], local_dir=args.output_dir, token=args.hub_token)
    logger.info("resume: hub: downloaded %s/%s", repo, folder)
    return str(Path(args.output_dir) / folder)


def _newest_pushed_checkpoint(files: list[str]) -> str | None:
    folders = {f.split("/", 1)[0] for f in files if "/" in f and f.endswith(_COMPLETE_MARKER)}
    if "last-checkpoint" in folders:  # hub_strategy "checkpoint" keeps the newest there
        return "last-checkpoint"
    numbered = [(int(m.group(1)), name) for name in folders if (m := _CHECKPOINT.match(name))]
    return max(numbered)[1] if numbered else None


# --- The budget's clock in a checkpoint ----------------------------------------------------------------


def write_budget_state(checkpoint: str | os.PathLike, state: dict) -> None:
    path = Path(checkpoint)
    path.mkdir(parents=True, exist_ok=True)
    (path / BUDGET_STATE).write_text(json.dumps(state))


def read_budget_state(checkpoint: str | os.PathLike | None) -> dict | None:
    if checkpoint is None or not (Path(checkpoint) / BUDGET_STATE).is_file():
        return None
    return json.loads((Path(checkpoint) / BUDGET_STATE).read_text())
