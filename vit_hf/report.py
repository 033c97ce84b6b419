"""What runs did, in words: the end-of-run summary, and a comparison of finished runs.

    python -m vit_hf.report OUTPUT_DIR [OTHER_DIR ...] [--plot FILE]

prints one column per run (final and best accuracy, top-5, wall time, images/s, steps, epochs, and
the recipe keys whose values differ between the runs), read from each output_dir's recipe.yaml,
trainer_state.json, eval_results.json and all_results.json; `--plot` overlays their curves.

Also where runs report to: `default_report_to()`, TensorBoard when it is installed. This module
imports neither torch nor transformers, so the recipe defaults and the CLI stay quick.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .durations import format_duration

EXIT_BAD_INPUT = 2


def default_report_to() -> str:
    """'tensorboard' when TensorBoard can be imported (the Trainer's test for it), else 'none'."""
    installed = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    return "tensorboard" if installed else "none"


# A finished run's files -------------------------------------------------------------------------


@dataclass
class RunRecord:
    """What an output_dir holds about its run; any of the files may be missing."""

    path: Path
    recipe_text: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # all_results.json, then eval_results.json over it
    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int | None = None
    epoch: float | None = None

    @property
    def found(self) -> bool:
        """Whether the folder holds any of a run's files."""
        return bool(self.recipe_text or self.results or self.history)

    @property
    def accuracy(self) -> float | None:
        return self.results.get("eval_accuracy")

    @property
    def top5_accuracy(self) -> float | None:
        return self.results.get("eval_top5_accuracy")

    @property
    def best(self) -> tuple[float, int] | None:
        return best_accuracy(self.history)

    @property
    def wall_seconds(self) -> float | None:
        return last_value(self.history, "elapsed_seconds") or last_value(self.history, "train_runtime")

    @property
    def images_per_second(self) -> float | None:
        return typical_images_per_second(self.history) or last_value(self.history, "train_samples_per_second")

    @property
    def images_seen(self) -> int | None:
        return last_value(self.history, "images_seen")


def load_run(path: str | Path) -> RunRecord:
    """The RunRecord of an output_dir, with what it holds so far."""
    path = Path(path)
    record = RunRecord(path=path)
    if (path / "recipe.yaml").is_file():
        from .recipe import yaml_load

        record.recipe_text = (path / "recipe.yaml").read_text()
        record.recipe = yaml_load(record.recipe_text) or {}
    for name in ("all_results.json", "eval_results.json"):
        if (path / name).is_file():
            record.results |= json.loads((path / name).read_text())
    if (path / "trainer_state.json").is_file():
        state = json.loads((path / "trainer_state.json").read_text())
        record.history = state.get("log_history", [])
        record.global_step, record.epoch = state.get("global_step"), state.get("epoch")
    return record


def best_accuracy(history: list[dict[str, Any]]) -> tuple[float, int] | None:
    """(the best eval_accuracy logged, its step), or None when no evaluation was logged."""
    evaluations = [(entry["eval_accuracy"], entry.get("step", 0)) for entry in history if "eval_accuracy" in entry]
    return max(evaluations, key=lambda pair: pair[0]) if evaluations else None


def typical_images_per_second(history: list[dict[str, Any]]) -> float | None:
    """The median logging window's throughput: the first windows (start-up) and evaluation pauses don't skew it."""
    rates = [entry["images_per_second"] for entry in history if "images_per_second" in entry]
    return statistics.median(rates) if rates else None


def last_value(history: list[dict[str, Any]], key: str) -> Any:
    values = [entry[key] for entry in history if key in entry]
    return values[-1] if values else None


# One run: the end-of-run summary ----------------------------------------------------------------


def format_summary(metrics: dict[str, float], state, timing, output_dir: str | Path, budget=None) -> str:
    """One screen at the end of a run: accuracy, images and speed, where the time went, where the model is.

    `state` is the TrainerState, `timing` the RunMonitor's RunTiming, `budget` the TimeBudget or None.
    """
    accuracy = f"final {_number(metrics.get('eval_accuracy'))} (top-5 {_number(metrics.get('eval_top5_accuracy'))})"
    images = state.global_step * timing.images_per_step
    phases = " | ".join(f"{name} {format_duration(seconds)}" for name, seconds in _phases(timing).items())
    lines = [
        f"accuracy  {accuracy}{_best_text(state.log_history)}",
        f"trained   {state.global_step:,} steps | {images:,} images | {state.epoch or 0:.2f} epochs | "
        f"{timing.images_per_second:,.0f} images/s",
        f"time      {phases}",
    ]
    if timing.first_step >= 1.0:
        lines.append(f"          of the training: the first step {format_duration(timing.first_step)} (warm-up, compile), "
                     "kept out of images/s")
    if budget is not None:
        left = format_duration(max(0.0, budget.remaining()))
        lines.append(f"budget    {format_duration(budget.seconds)}: {left} left")
    lines.append(f"model     {output_dir}")
    lines.append(f'load      pipeline("image-classification", model="{output_dir}")')
    figures = [name for name in ("curves.png", "confusion_matrix.png") if (Path(output_dir) / name).is_file()]
    if figures:
        lines.append(f"plots     {', '.join(figures)}")
    rule = "─" * min(100, max(len(line) for line in lines))
    return "\n".join([rule, *lines, rule])


def _best_text(history: list[dict[str, Any]]) -> str:
    best = best_accuracy(history)
    return f" | best {best[0]:.4f} at step {best[1]}" if best else ""


def _phases(timing) -> dict[str, float]:
    phases = {
        "setup": timing.setup,
        "training": timing.training,
        "evaluation": timing.evaluation,
        "saving": timing.saving,
    }
    return phases | {"total": sum(phases.values())}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# Several runs: the comparison -------------------------------------------------------------------

# Keys that name the run rather than describe how it was trained.
NOT_COMPARED = {"training.output_dir", "training.hub_model_id"}


def format_comparison(runs: list[RunRecord]) -> str:
    """A table, one column per run: results, then the recipe keys whose values differ."""
    rows = [["", *run_names(runs)]]
    rows += [
        ["accuracy", *(_number(run.accuracy) for run in runs)],
        ["best accuracy", *(_number(run.best[0]) if run.best else "-" for run in runs)],
        ["top-5 accuracy", *(_number(run.top5_accuracy) for run in runs)],
        ["wall time", *(format_duration(run.wall_seconds) if run.wall_seconds else "-" for run in runs)],
        ["images/s", *(f"{run.images_per_second:,.0f}" if run.images_per_second else "-" for run in runs)],
        ["steps", *(str(run.global_step) if run.global_step is not None else "-" for run in runs)],
        ["epochs", *(f"{run.epoch:.2f}" if run.epoch is not None else "-" for run in runs)],
    ]
    differing = differing_recipe_keys([run.recipe for run in runs])
    if differing:
        rows.append(["recipe:", *([""] * len(runs))])
        flat = [flatten(run.recipe) for run in runs]
        rows += [[f"  {key}", *(_cell(values.get(key, "-")) for values in flat)] for key in differing]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def run_names(runs: list[RunRecord]) -> list[str]:
    """Folder names, or the paths as given when two folders share a name."""
    names = [run.path.name for run in runs]
    return names if len(set(names)) == len(names) else [str(run.path) for run in runs]


def differing_recipe_keys(recipes: list[dict[str, Any]]) -> list[str]:
    """Dotted keys (training.learning_rate) whose values are not the same in every recipe."""
    flat = [flatten(recipe) for recipe in recipes]
    keys = sorted(set().union(*flat) - NOT_COMPARED) if flat else []
    missing = object()
    return [key for key in keys if len({repr(values.get(key, missing)) for values in flat}) > 1]


def flatten(recipe: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in recipe.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vit_hf.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="a run's training.output_dir")
    parser.add_argument("--plot", metavar="FILE", help="write the runs' curves, overlaid, to this PNG")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runs = [load_run(path) for path in args.output_dirs]
    for run in runs:
        if not run.found:
            print(f"error: {str(run.path)!r} holds no recipe.yaml, trainer_state.json or eval_results.json: "
                  "not a run's training.output_dir", file=sys.stderr)
            return EXIT_BAD_INPUT
    print(format_comparison(runs))
    if args.plot:
        from .plots import plot_curves

        plot_curves(dict(zip(run_names(runs), (run.history for run in runs))), args.plot)
        print(f"curves: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
