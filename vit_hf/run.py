"""The command line: python -m vit_hf.run RECIPE.yaml [--eval-only] [--section.key value ...]

The only module that reads argv. Bad input ends as one message and exit code 2, before any data or
model is loaded.
"""

from __future__ import annotations

import logging
import os
import sys
import time

USAGE = """usage: python -m vit_hf.run RECIPE.yaml [--eval-only] [--section.key value | --section.key=value ...]

Trains (or with --eval-only, evaluates model.pretrained) as the recipe says. Overrides are merged into
the recipe before validation; values are YAML scalars (--data.classes "[cat, dog]" is a list).

Recipe keys:"""

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    started_at = time.monotonic()  # the budget counts from here: data loading is part of the run
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        return print_help()
    setup_logging()
    from .errors import VitHfError

    try:
        return run(argv, started_at)
    except VitHfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def run(argv: list[str], started_at: float) -> int:
    from .recipe import load_recipe

    eval_only = "--eval-only" in argv
    argv = [a for a in argv if a != "--eval-only"]
    path, overrides = argv[0], argv[1:]
    recipe = load_recipe(path, overrides)
    args = recipe.training_arguments()  # TrainingArguments' own checks, before any data is loaded
    check_output_dir(args.output_dir)
    if eval_only:
        from .evaluation import evaluate_only

        evaluate_only(recipe)
    else:
        from .train import train

        train(recipe, started_at=started_at)
    return 0


def check_output_dir(path: str) -> None:
    from .errors import RecipeError

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RecipeError(f"training.output_dir: cannot create {path!r} ({exc.strerror}); choose a writable folder") from None
    if not os.access(path, os.W_OK):
        raise RecipeError(f"training.output_dir: {path!r} is not writable; choose a writable folder")


def print_help() -> int:
    from .recipe import help_text

    print(USAGE)
    print(help_text())
    return 0


def setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    # transformers' INFO is a wall of config dumps; its warnings stay.
    import transformers

    transformers.logging.set_verbosity_warning()


if __name__ == "__main__":
    sys.exit(main())
