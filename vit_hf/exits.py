"""The command line's exit codes, and the failures that end a run once its work is safe.

    0  done
    2  bad input: recipe, command line, dataset, output_dir (unwritable, or in use by another run);
       nothing was trained. Also a bad image with data.on_bad_image: raise.
    3  the model is saved in output_dir, but a Hub push failed (after retries); push it later
    4  a non-finite loss stopped training; a checkpoint holds the last good weights
    5  a save failed (disk full, unwritable); the previous checkpoint is intact

A `RunFailed` is raised only after what can be kept is on disk; `run.main` prints it and returns
its code.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_PUSH_FAILED = 3
EXIT_DIVERGED = 4
EXIT_SAVE_FAILED = 5


class RunFailed(Exception):
    """A run that ended badly, after saving what could be saved; the message says what is where."""

    exit_code = 1


class PushFailed(RunFailed):
    exit_code = EXIT_PUSH_FAILED


class TrainingDiverged(RunFailed):
    exit_code = EXIT_DIVERGED


class SaveFailed(RunFailed):
    exit_code = EXIT_SAVE_FAILED
