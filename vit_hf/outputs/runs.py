"""A finished (or running) run's output_dir, read back: recipe, results, log history; and several runs
side by side, for `python -m vit_hf.report OUT1 OUT2`."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics import DEFAULT_METRICS, REQUIRED_METRIC, metric_info, result_key
from ..recipe.durations import format_duration
from ..recipe.load import yaml_load


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
    def metric_names(self) -> list[str]:
        """The run's evaluation.metrics (a run from before that key computed the default ones)."""
        return (self.recipe.get("evaluation") or {}).get("metrics") or list(DEFAULT_METRICS)

    def metric_value(self, name: str) -> float | None:
        return self.results.get(f"eval_{result_key(name)}")

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


# Keys that name the run rather than describe how it was trained.
NOT_COMPARED = {"training.output_dir", "training.hub_model_id"}


def format_comparison(runs: list[RunRecord]) -> str:
    """A table, one column per run: results, then the recipe keys whose values differ."""
    rows = [["", *run_names(runs)]]
    rows += [
        ["accuracy", *(number(run.accuracy) for run in runs)],
        ["best accuracy", *(number(run.best[0]) if run.best else "-" for run in runs)],
    ]
    rows += [[metric_info(name).label, *(number(run.metric_value(name)) for run in runs)]
             for name in other_metrics(runs)]
    rows += [
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


def other_metrics(runs: list[RunRecord]) -> list[str]:
    """The metrics besides accuracy that any of the runs computed, in the order their recipes list them."""
    names = [name for run in runs for name in run.metric_names if name != REQUIRED_METRIC]
    return list(dict.fromkeys(names))


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


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
