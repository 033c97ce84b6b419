"""The end-of-run summary: one screen with the accuracy, images and speed, where the time went, where the
model is and how to load it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..metrics import DEFAULT_METRICS, metric_info, result_key
from ..recipe.durations import format_duration
from .runs import best_accuracy, number

# The metrics the accuracy line shows; any other of evaluation.metrics gets the metrics line.
ACCURACY_LINE = ("accuracy", "top5_accuracy")


def format_summary(metrics: dict[str, float], state, timing, output_dir: str | Path, budget=None,
                   metric_names: Sequence[str] = DEFAULT_METRICS) -> str:
    """One screen at the end of a run: accuracy (and the other metrics), images and speed, where the time went,
    where the model is.

    `state` is the TrainerState, `timing` the RunMonitor's RunTiming, `budget` the TimeBudget or None,
    `metric_names` evaluation.metrics.
    """
    accuracy = f"final {number(metrics.get('eval_accuracy'))} (top-5 {number(metrics.get('eval_top5_accuracy'))})"
    images = state.global_step * timing.images_per_step
    phases = " | ".join(f"{name} {format_duration(seconds)}" for name, seconds in _phases(timing).items())
    lines = [
        f"accuracy  {accuracy}{_best_text(state.log_history)}",
        *_metrics_line(metrics, metric_names),
        f"trained   {state.global_step:,} steps | {images:,} images | {state.epoch or 0:.2f} epochs | "
        f"{timing.images_per_second:,.0f} images/s",
        f"time      {phases}",
    ]
    if timing.first_step >= 1.0:
        first = format_duration(timing.first_step)
        lines.append(f"          of the training: the first step {first} (warm-up, compile), kept out of images/s")
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


def _metrics_line(metrics: dict[str, float], names: Sequence[str]) -> list[str]:
    others = [name for name in names if name not in ACCURACY_LINE]
    if not others:
        return []
    values = (f"{metric_info(name).label} {number(metrics.get(f'eval_{result_key(name)}'))}" for name in others)
    return ["metrics   " + " | ".join(values)]


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
