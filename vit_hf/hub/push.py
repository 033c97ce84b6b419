"""The Hub never costs a run: training goes on through Hub failures, local checkpoints stay, failed
pushes are retried, and what still failed is reported at the end (exit code 3, after the local save).

Details: docs/DESIGN.md, "The Hub never costs a run".
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, PushInProgress
from transformers.utils.hub import hf_api

from ..errors import PushFailed
from ..outputs.layout import latest_checkpoint

logger = logging.getLogger(__name__)

# Seconds a Hub request may wait for an answer (connect, each read, each write).
REQUEST_TIMEOUT = 300.0
# Waits before each retry of a push at the end of the run.
RETRY_DELAYS = (10.0, 60.0, 180.0)
# At the end, how long to wait for checkpoint pushes still running in the background.
BACKGROUND_WAIT = 600.0
# What a checkpoint push leaves out of output_dir: vit_hf's own files (_*), the checkpoint folders (pushed as
# last-checkpoint or by name), and TensorBoard's event files, still being written (the final push sends them).
LIVE_FILES = ["_*", "checkpoint-*", "runs/*"]
# HTTP statuses a retry can change: timeouts, rate limits, server errors. Other 4xx are refusals.
RETRYABLE_CLIENT_STATUSES = (408, 429)


@dataclass
class HubPushes:
    """What happened to this run's pushes: the failures, and the checkpoints whose push failed."""

    repo_ready: bool = False
    failures: list[str] = field(default_factory=list)
    failed_checkpoints: list[str] = field(default_factory=list)

    def record(self, what: str, error: BaseException, checkpoint: str | None = None) -> None:
        self.failures.append(f"{what}: {describe(error)}")
        if checkpoint is not None and checkpoint not in self.failed_checkpoints:
            self.failed_checkpoints.append(checkpoint)

    def job_done(self, job: futures.Future, what: str, checkpoint: str) -> None:
        """Done-callback of a background push (runs in the push thread)."""
        error = None if job.cancelled() else job.exception()
        if error is not None:
            self.record(what, error, checkpoint)
            logger.warning("hub: %s failed (%s); training goes on, it is pushed again at the end",
                           what, describe(error))


class HubPusher:
    """The Hub side of one run, owned by its VitTrainer (training.trainer): creating the repository, the
    checkpoint pushes and their failures, the final push with retries. `pushes` says what happened."""

    def __init__(self):
        self.pushes = HubPushes()

    def start(self, trainer, token: str | None = None, private: bool | None = None) -> None:
        """Trainer.init_hf_repo, except that a Hub it cannot reach does not stop training."""
        bound_requests()
        trainer.push_in_progress = None
        trainer.hub_model_id = trainer.args.hub_model_id or Path(trainer.args.output_dir).absolute().name
        if not trainer.is_world_process_zero():
            return
        try:
            self.ensure_repo(trainer, token, private)
        except Exception as error:  # noqa: BLE001 - whatever the Hub answers, training goes on
            self.pushes.record(f"creating the repository {trainer.hub_model_id}", error)
            logger.warning("hub: cannot create %s now (%s); training goes on, and creating it is tried again "
                           "before each push", trainer.hub_model_id, describe(error))

    def ensure_repo(self, trainer, token: str | None = None, private: bool | None = None) -> None:
        """Create the repository (private unless training.hub_private_repo is false) if not done yet."""
        if self.pushes.repo_ready:
            return
        private = trainer.args.hub_private_repo if private is None else private
        token = token or trainer.args.hub_token
        url = hf_api().create_repo(trainer.hub_model_id, token=token, private=private, exist_ok=True)
        trainer.hub_model_id = url.repo_id
        self.pushes.repo_ready = True

    def push_checkpoint(self, trainer, checkpoint: str) -> None:
        """Trainer._push_from_checkpoint, in the background as there, with two differences: each failure is
        recorded (the Trainer's futures drop them), and TensorBoard's event files wait for the final push.
        They grow at every log entry while training runs, and an upload whose file changes under it fails
        (its content no longer matches the hash sent first): with them, most checkpoint pushes of a run
        that logs often failed."""
        args = trainer.args
        if not trainer.is_world_process_zero() or str(getattr(args.hub_strategy, "value", args.hub_strategy)) == "end":
            return
        if not args.hub_always_push and trainer.push_in_progress is not None and not trainer.push_in_progress.is_done():
            return  # as the Trainer: a push still running is not queued behind
        what = f"pushing {Path(checkpoint).name}"
        try:
            self.ensure_repo(trainer)
            trainer.callback_handler.on_push_begin(args, trainer.state, trainer.control)
            jobs = self._start_checkpoint_push(trainer, checkpoint)
        except Exception as error:  # noqa: BLE001 - raised here, a Hub error would end the checkpoint's save
            self.pushes.record(what, error, checkpoint)
            logger.warning("hub: %s failed (%s); training goes on", what, describe(error))
            return
        for job in jobs:
            job.add_done_callback(partial(self.pushes.job_done, what=what, checkpoint=checkpoint))
        if trainer.push_in_progress is None or trainer.push_in_progress.is_done():
            trainer.push_in_progress = PushInProgress(jobs)
        else:
            trainer.push_in_progress.jobs.extend(jobs)

    def _start_checkpoint_push(self, trainer, checkpoint: str) -> list[futures.Future]:
        """The model files of `checkpoint` into output_dir and up to the repository (and the checkpoint folder
        itself for hub_strategy checkpoint / all_checkpoints), as futures."""
        args, output_dir = trainer.args, Path(trainer.args.output_dir)
        for name in _model_files(Path(checkpoint)):
            shutil.copy(Path(checkpoint) / name, output_dir / name)
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(output_dir)
        torch.save(args, output_dir / TRAINING_ARGS_NAME)
        by_steps = str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps"
        message = (f"Training in progress, step {trainer.state.global_step}" if by_steps
                   else f"Training in progress, epoch {int(trainer.state.epoch or 0)}")
        upload = partial(hf_api().upload_folder, repo_id=trainer.hub_model_id, token=args.hub_token,
                         revision=args.hub_revision, run_as_future=True)
        jobs = [upload(folder_path=str(output_dir), commit_message=message, ignore_patterns=LIVE_FILES)]
        strategy = str(getattr(args.hub_strategy, "value", args.hub_strategy))
        if strategy in ("checkpoint", "all_checkpoints"):
            path_in_repo = "last-checkpoint" if strategy == "checkpoint" else Path(checkpoint).name
            jobs.append(upload(folder_path=checkpoint, path_in_repo=path_in_repo,
                               commit_message=message + ", checkpoint"))
        return jobs

    def _background_jobs(self, trainer) -> list[futures.Future]:
        return list(trainer.push_in_progress.jobs) if trainer.push_in_progress is not None else []

    def wait_for_background_pushes(self, trainer) -> None:
        """Wait for the checkpoint pushes still running, at most BACKGROUND_WAIT seconds."""
        jobs = self._background_jobs(trainer)
        _, running = futures.wait(jobs, timeout=BACKGROUND_WAIT)
        if running:
            logger.warning("hub: a checkpoint push still runs after %.0f s; not waiting for it", BACKGROUND_WAIT)
            trainer.push_in_progress = None  # or Trainer.push_to_hub would wait for it, unbounded

    def push_at_end(self, trainer, budget=None, commit_message: str = "End of training") -> None:
        """The final push and the failed checkpoint pushes again, with retries; PushFailed if any still fails."""
        if not trainer.is_world_process_zero():
            return
        pushes: HubPushes = self.pushes
        self.wait_for_background_pushes(trainer)
        failed_during_run = len(pushes.failures)
        # The model first: if even it cannot be pushed, the checkpoints are not tried.
        final = partial(self._final_push, trainer, commit_message)
        if not _with_retries(final, f"the final push to {trainer.hub_model_id}", pushes, budget):
            raise PushFailed(_failure_report(trainer, pushes))
        lost = []
        for checkpoint, path_in_repo in self._checkpoints_to_push_again(trainer):
            upload = partial(self._upload_checkpoint, trainer, checkpoint, path_in_repo)
            if not _with_retries(upload, f"pushing {Path(checkpoint).name} again", pushes, budget):
                lost.append(path_in_repo)
        if lost:
            raise PushFailed(f"the model is on the Hub ({trainer.hub_model_id}), but not the checkpoints {lost}: "
                             f"{pushes.failures[-1]}")
        if failed_during_run:
            logger.warning("hub: %d push(es) failed during the run (first: %s); retried, %s is up to date now",
                           failed_during_run, pushes.failures[0], trainer.hub_model_id)

    def _final_push(self, trainer, commit_message: str) -> None:
        """Trainer.push_to_hub without its save_model: the model is saved already (finish), and a save that
        every rank must join cannot be repeated by rank 0 alone at each retry."""
        self.ensure_repo(trainer)
        trainer.create_model_card(model_name=trainer.hub_model_id.split("/")[-1])
        hf_api().upload_folder(
            repo_id=trainer.hub_model_id,
            folder_path=trainer.args.output_dir,
            commit_message=commit_message,
            token=trainer.args.hub_token,
            ignore_patterns=["_*", "checkpoint-*"],  # as Trainer.push_to_hub
            revision=trainer.args.hub_revision,
        )

    def _checkpoints_to_push_again(self, trainer) -> list[tuple[str, str]]:
        """(local folder, folder in the repo) for each checkpoint push that failed and can be made again."""
        failed = self.pushes.failed_checkpoints
        strategy = str(getattr(trainer.args.hub_strategy, "value", trainer.args.hub_strategy))
        if not failed:
            return []
        if strategy == "checkpoint":
            newest = latest_checkpoint(trainer.args.output_dir)
            return [(newest, "last-checkpoint")] if newest else []
        if strategy == "all_checkpoints":
            return [(folder, Path(folder).name) for folder in failed if Path(folder).is_dir()]
        return []  # every_save, end: only model files, which the final push sends

    def _upload_checkpoint(self, trainer, checkpoint: str, path_in_repo: str) -> None:
        self.ensure_repo(trainer)
        hf_api().upload_folder(
            repo_id=trainer.hub_model_id,
            folder_path=checkpoint,
            path_in_repo=path_in_repo,
            commit_message=f"{Path(checkpoint).name}, pushed again after a failed push",
            token=trainer.args.hub_token,
            revision=trainer.args.hub_revision,
        )


def _with_retries(push: Callable[[], None], what: str, pushes: HubPushes, budget) -> bool:
    """Whether `push` succeeded within 1 + len(RETRY_DELAYS) attempts (fewer if the budget runs out)."""
    for delay in (0.0, *RETRY_DELAYS):
        if delay:
            if budget is not None and budget.remaining() < delay:
                logger.warning("hub: no time left in budget.time to retry %s", what)
                return False
            logger.info("hub: retrying %s in %g s", what, delay)
            time.sleep(delay)
        try:
            push()
            return True
        except Exception as error:  # noqa: BLE001 - every failure is reported, none ends the run early
            pushes.record(what, error)
            logger.warning("hub: %s failed: %s", what, describe(error))
            if is_refusal(error):
                return False
    return False


def _failure_report(trainer, pushes: HubPushes) -> str:
    output_dir = trainer.args.output_dir
    return (
        f"the model is saved in {output_dir}, but pushing it to the Hub failed: {pushes.failures[-1]}."
        f"{_hint(pushes.failures[-1])} Push it later with: hf upload {trainer.hub_model_id} {output_dir} "
        "--exclude 'checkpoint-*' --exclude '_*'"
    )


def _hint(failure: str) -> str:
    if "401" in failure or "403" in failure:
        return (" The Hub refused the token: check HF_TOKEN (or `hf auth login`) and that it may write to "
                "the repository.")
    return ""


# --- Errors -----------------------------------------------------------------------------------------------


def is_refusal(error: BaseException) -> bool:
    """An HTTP 4xx that a retry cannot change (bad token, no permission, no such repository)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status is not None and 400 <= status < 500 and status not in RETRYABLE_CLIENT_STATUSES


def describe(error: BaseException) -> str:
    """One line: the error's type and the first line of its message (huggingface_hub's are long)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def bound_requests() -> None:
    """Every huggingface_hub request of this process gives up after REQUEST_TIMEOUT seconds without an answer."""
    set_client_factory(_client_with_timeout)


def _client_with_timeout():
    client = default_client_factory()
    client.timeout = REQUEST_TIMEOUT  # read when the client is made: tests shorten it
    return client


def _model_files(checkpoint: Path) -> list[str]:
    """The files of a checkpoint that make the model: config and weights, shards included."""
    names = [CONFIG_NAME, SAFE_WEIGHTS_NAME]
    index = checkpoint / SAFE_WEIGHTS_INDEX_NAME
    if index.is_file():
        names += [SAFE_WEIGHTS_INDEX_NAME, *sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [name for name in names if (checkpoint / name).is_file()]
