"""A save that fails (disk full, unwritable) ends the run with a clear error, never with a checkpoint
that looks complete but is not, and never at the cost of the previous one.

    with guarded_save(folder, output_dir, what="checkpoint-12"):
        ...write the checkpoint...
    with guarded_final_save(output_dir):
        ...write the final model...

Trainer._save_checkpoint writes trainer_state.json last (checked on transformers 5.24: model, then
optimizer, scheduler, scaler and RNG states, then trainer_state.json, then the push and the rotation
that deletes old checkpoints), so a checkpoint is complete when its trainer_state.json is a readable
JSON file (checkpoints.latest_checkpoint). A save that fails before that leaves a partial folder:
it is removed, so that neither `resume: auto` nor a reader mistakes it for a checkpoint. The rotation
runs only after a complete save, so the previous checkpoint is still there: the message names it.

Disk-full errors come in several types: OSError ENOSPC from Python writes, a RuntimeError ("unexpected
pos", no errno) from torch.save's C++ writer, a SafetensorError from safetensors; all are caught here,
and the space left tells a full disk from other causes when the error does not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .checkpoints import latest_checkpoint
from .exits import SaveFailed

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "trainer_state.json"
# Less free space than this after a failed write: the disk is full (a checkpoint needs far more).
NEARLY_FULL_BYTES = 16 * 2**20


def _write_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return OSError, RuntimeError, SafetensorError


@contextlib.contextmanager
def guarded_save(folder: str | os.PathLike, output_dir: str | os.PathLike, what: str) -> Iterator[None]:
    """Run a save into `folder`; if it fails, remove what it left unless complete, and raise SaveFailed."""
    try:
        yield
    except _write_errors() as exc:
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
    except _write_errors() as exc:
        for weights in Path(output_dir).glob("model*.safetensors*"):
            weights.unlink(missing_ok=True)
        raise SaveFailed(failure_message(exc, "the final model", output_dir)) from exc


def is_complete(checkpoint: Path) -> bool:
    marker = checkpoint / COMPLETE_MARKER
    if not marker.is_file():  # a regular file: not a device, not missing
        return False
    try:
        json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return True


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
