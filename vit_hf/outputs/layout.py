"""What output_dir holds, as the Trainer and vit_hf write it: checkpoint folders, which of them are
complete, the budget's clock inside a checkpoint. The one place these rules are written down; training
(saves, resume) and the Hub (pushes, resume: hub) read them from here.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Written last by Trainer._save_checkpoint (transformers 5.24: model, then optimizer, scheduler, scaler and
# RNG states, then trainer_state.json, then the push and the rotation of old checkpoints): a folder without
# it, readable, was cut short (kill -9 or a full disk mid-save).
COMPLETE_MARKER = "trainer_state.json"
BUDGET_STATE = "budget_state.json"
STREAM_POSITION = "stream_position.json"  # a training stream's passes and batches (data/stream_resume.py)
FINAL_WEIGHTS = "model.safetensors"


def is_complete(checkpoint: str | os.PathLike) -> bool:
    """Whether a checkpoint folder was written to the end: its trainer_state.json is a readable JSON file."""
    marker = Path(checkpoint) / COMPLETE_MARKER
    if not marker.is_file():  # a regular file: not a device, not missing
        return False
    try:
        json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return True


def latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` folder in output_dir, or None."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    for _, path in sorted(found, reverse=True):
        if is_complete(path):
            return str(path)
        logger.warning("skipping %s: incomplete (no readable %s), probably cut short mid-save", path, COMPLETE_MARKER)
    return None


def holds_a_finished_run(output_dir: str | os.PathLike, checkpoint: str) -> bool:
    """Whether output_dir's final model is newer than `checkpoint`: the run it belongs to ended."""
    final_model = Path(output_dir) / FINAL_WEIGHTS
    return final_model.is_file() and final_model.stat().st_mtime >= (Path(checkpoint) / COMPLETE_MARKER).stat().st_mtime


def write_budget_state(checkpoint: str | os.PathLike, state: dict) -> None:
    _write_state(checkpoint, BUDGET_STATE, state)


def read_budget_state(checkpoint: str | os.PathLike | None) -> dict | None:
    return _read_state(checkpoint, BUDGET_STATE)


def write_stream_position(checkpoint: str | os.PathLike, state: dict) -> None:
    _write_state(checkpoint, STREAM_POSITION, state)


def read_stream_position(checkpoint: str | os.PathLike | None) -> dict | None:
    return _read_state(checkpoint, STREAM_POSITION)


def _write_state(checkpoint: str | os.PathLike, name: str, state: dict) -> None:
    path = Path(checkpoint)
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(state))


def _read_state(checkpoint: str | os.PathLike | None, name: str) -> dict | None:
    if checkpoint is None or not (Path(checkpoint) / name).is_file():
        return None
    return json.loads((Path(checkpoint) / name).read_text())
