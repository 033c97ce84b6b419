"""The command line: python -m vit_hf.run RECIPE.yaml [--eval-only | --search] [--section.key value ...]

The only module that reads argv. Bad input ends as one message and exit code 2, before any data or
model is loaded. Other exit codes (exits.py): 3 a Hub push failed (the model is saved locally),
4 a non-finite loss stopped training (a checkpoint holds the last good weights), 5 a save failed
(disk full; the previous checkpoint is intact).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time

USAGE = """usage: python -m vit_hf.run RECIPE.yaml [--eval-only | --search] [--section.key value | --section.key=value ...]

Trains (or with --eval-only, evaluates model.pretrained; with --search, runs the recipe's search: section
and writes best_recipe.yaml) as the recipe says. Overrides are merged into the recipe before validation;
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
        return print_help()
    setup_logging()
    from .errors import VitHfError
    from .exits import EXIT_BAD_INPUT, RunFailed

    try:
        return run(argv, started_at)
    except VitHfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
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


def run(argv: list[str], started_at: float) -> int:
    from .hub import bound_requests
    from .lock import output_dir_lock
    from .preflight import check_output_dir, check_weight_files
    from .recipe import load_recipe

    eval_only, search = "--eval-only" in argv, "--search" in argv
    if eval_only and search:
        from .errors import RecipeError

        raise RecipeError("--eval-only and --search exclude each other: evaluate a model, or search a recipe")
    argv = [a for a in argv if a not in ("--eval-only", "--search")]
    path, overrides = argv[0], argv[1:]
    recipe = load_recipe(path, overrides)
    args = recipe.training_arguments()  # TrainingArguments' own checks, before any data is loaded
    check_output_dir(args.output_dir)
    check_weight_files(recipe)
    bound_requests()  # no Hub request of this run (data, model, resume: hub, pushes) can hang it
    with output_dir_lock(args.output_dir):  # a second run into the same output_dir stops here
        if eval_only:
            from .evaluation import evaluate_only

            evaluate_only(recipe)
        elif search:
            from .search import search as run_search

            run_search(recipe, started_at=started_at)
        else:
            from .train import train

            train(recipe, started_at=started_at)
    return 0


def print_help() -> int:
    from .recipe import help_text

    print(USAGE)
    print(help_text())
    return 0


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
    # transformers' INFO is a wall of config dumps; its warnings stay.
    import transformers

    transformers.logging.set_verbosity_warning()


if __name__ == "__main__":
    sys.exit(main())
