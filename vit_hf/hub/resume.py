"""resume: hub: the newest checkpoint pushed to training.hub_model_id, downloaded into output_dir."""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import list_repo_files, snapshot_download

from ..errors import RecipeError
from ..outputs.layout import CHECKPOINT, COMPLETE_MARKER

logger = logging.getLogger(__name__)


def download_hub_checkpoint(args) -> str | None:
    """The newest checkpoint pushed to hub_model_id (hub_strategy checkpoint or all_checkpoints), in output_dir."""
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
    folders = {f.split("/", 1)[0] for f in files if "/" in f and f.endswith(COMPLETE_MARKER)}
    if "last-checkpoint" in folders:  # hub_strategy "checkpoint" keeps the newest there
        return "last-checkpoint"
    numbered = [(int(m.group(1)), name) for name in folders if (m := CHECKPOINT.match(name))]
    return max(numbered)[1] if numbered else None
