"""The command line: python -m vit_hf.run RECIPE.yaml [--eval-only | --search | --prepare-data] [--KEY VALUE ...]

The only module that reads argv. Bad input ends as one message and exit code 2, before any data or
model is loaded; the other exit codes are in vit_hf/errors.py.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time

import transformers

from ..errors import EXIT_BAD_INPUT, RecipeError, RunFailed, VitHfError
from ..hub.push import bound_requests
from ..outputs.lock import output_dir_lock
from ..recipe.help import help_text
from ..recipe.load import load_recipe
from ..recipe.schema import Recipe
from ..recipe.training_args import training_arguments
from ..search.study import search
from ..training.evaluate import evaluate_only
from ..training.train import prepare_data, train
from .preflight import check_gpu_decode, check_output_dir, check_weight_files

USAGE = """usage: python -m vit_hf.run RECIPE.yaml [--eval-only | --search | --prepare-data] [--section.key value ...]

Trains (or with --eval-only, evaluates model.pretrained; with --search, runs the recipe's search: section
and writes best_recipe.yaml; with --prepare-data, downloads the dataset and builds its decode-once caches,
outside any budget) as the recipe says. Overrides are merged into the recipe before validation;
values are YAML scalars (--data.classes "[cat, dog]" is a list).

Recipe keys:"""


def process_started_at() -> float:
    """time.monotonic() at the moment this process started (Linux), else now."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - max(0.0, age)


def main(argv: list[str] | None = None) -> int:
    # The budget counts from the process's start when run as a command (imports and data loading are
    # part of the run), from this call when called from Python.
    started_at = process_started_at() if argv is None else time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        print(USAGE)
        print(help_text())
        return 0
    setup_logging()
    try:
        return run(argv, started_at)
    except VitHfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met more than tensors
        print(f"error: refused to load a checkpoint file that holds more than tensors: {_why(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _why(exc: Exception) -> str:
    """The line of torch's long weights-only message that names what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")


MODES = ("--eval-only", "--search", "--prepare-data")


def run(argv: list[str], started_at: float) -> int:
    modes = [mode for mode in MODES if mode in argv]
    if len(modes) > 1:
        raise RecipeError(f"{' and '.join(modes)} exclude each other: give one of {', '.join(MODES)}, or none to train")
    argv = [a for a in argv if a not in MODES]
    recipe = load_recipe(argv[0], argv[1:])
    use_hub_token(recipe)
    args = training_arguments(recipe)  # TrainingArguments' own checks, before any data is loaded
    check_output_dir(args.output_dir)
    check_weight_files(recipe)
    if modes != ["--prepare-data"]:  # a node that only builds the caches decodes nothing on a GPU
        check_gpu_decode(recipe.data, args)
    bound_requests()  # no Hub request of this run (data, model, resume: hub, pushes) can hang it
    with output_dir_lock(args.output_dir):  # a second run into the same output_dir stops here
        if modes == ["--eval-only"]:
            evaluate_only(recipe)
        elif modes == ["--search"]:
            search(recipe, started_at=started_at)
        elif modes == ["--prepare-data"]:
            prepare_data(recipe)
        else:
            train(recipe, started_at=started_at)
    return 0


def use_hub_token(recipe: Recipe) -> None:
    """A recipe's training.hub_token goes to this process's HF_TOKEN, which huggingface_hub reads before the
    stored login, and never into TrainingArguments: the Trainer pickles those whole into training_args.bin,
    in output_dir and in every (pushed) checkpoint."""
    token = recipe.training.get("hub_token")
    if token:
        os.environ["HF_TOKEN"] = token


def setup_logging() -> None:
    # Under torchrun/accelerate (RANK, WORLD_SIZE set), as the Trainer's log_level_replica: the other
    # ranks log warnings only, tagged with their rank, so N processes do not print every line N times.
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    tag = f" [rank {rank}/{world_size}]" if world_size > 1 else ""
    logging.basicConfig(
        format=f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if rank == 0 else logging.WARNING,
    )
    transformers.logging.set_verbosity_warning()  # transformers' INFO is a wall of config dumps; warnings stay


if __name__ == "__main__":
    sys.exit(main())
