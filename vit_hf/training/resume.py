"""Where a run continues from (recipe key `resume`): the newest complete checkpoint of an unfinished run in
output_dir, none, the newest one pushed to the Hub, or a given folder."""

from __future__ import annotations

import logging

from ..errors import RecipeError
from ..hub.resume import download_hub_checkpoint
from ..outputs.layout import COMPLETE_MARKER, holds_a_finished_run, is_complete, latest_checkpoint

logger = logging.getLogger(__name__)


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
    if checkpoint and holds_a_finished_run(output_dir, checkpoint):
        logger.info("resume: %s holds a finished run; training a new one there", output_dir)
        return None
    return checkpoint


def _existing(path: str, key: str) -> str:
    if not is_complete(path):
        raise RecipeError(f"{key}: {path!r} is not a complete Trainer checkpoint folder (no readable "
                          f"{COMPLETE_MARKER})")
    return path
