"""What can go wrong on purpose, and the exit code each ends the command with.

    0  done
    2  bad input (VitHfError): recipe, command line, dataset, output_dir (unwritable, or in use by
       another run); nothing was trained. Also a bad image with data.on_bad_image: raise.
    3  the model is saved in output_dir, but a Hub push failed (after retries); push it later
    4  a non-finite loss stopped training; a checkpoint holds weights that never received a bad update
    5  a save failed (disk full, unwritable); the previous checkpoint is intact

Every message names what is wrong and what would be right. A `RunFailed` is raised only after what
can be kept is on disk; the command line prints it and exits with its code.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_PUSH_FAILED = 3
EXIT_DIVERGED = 4
EXIT_SAVE_FAILED = 5


class VitHfError(Exception):
    """Bad input from the user (recipe, data), as opposed to a bug: exit code 2."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(VitHfError):
    """A recipe key has a value that is not allowed."""


class DataError(VitHfError):
    """The dataset cannot be loaded or does not fit the recipe's data section."""


class RunFailed(Exception):
    """A run that ended badly, after saving what could be saved; the message says what is where."""

    exit_code = 1


class PushFailed(RunFailed):
    exit_code = EXIT_PUSH_FAILED


class TrainingDiverged(RunFailed):
    exit_code = EXIT_DIVERGED


class SaveFailed(RunFailed):
    exit_code = EXIT_SAVE_FAILED
