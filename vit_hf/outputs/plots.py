"""Figures of a run, as PNG files in output_dir, and the per-class breakdown of its evaluation.

- curves.png: training and evaluation loss and accuracy against wall time and against images seen,
  from trainer_state.json's log history (RunMonitor adds `elapsed_seconds` and `images_seen` to each
  entry; entries without them are skipped). `python -m vit_hf.report` overlays several runs the same way.
- confusion_matrix.png: rows are the true classes, columns the predictions, each row normalized so
  that rare classes read like common ones. Up to 30 classes each cell shows its count; beyond that
  cells are too small to read, so the most confused pairs are listed beside the matrix instead.

Figures are drawn on matplotlib's Agg canvas directly, never through pyplot: importing vit_hf must
not change the backend of a notebook or a GUI that uses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

DPI = 100
CURVES_SIZE = (12, 8)  # inches: 1200 x 800 pixels
WIDE_MATRIX_SIZE = (16, 9)  # above CELL_TEXT_MAX_CLASSES: matrix and the list of confused pairs
CELL_TEXT_MAX_CLASSES = 30
MARKERS_MAX_POINTS = 50  # beyond this, markers hide the line
TOP_CONFUSIONS = 20

# (log key, line style, legend label)
LOSS_SERIES = [("loss", "-", "train loss"), ("eval_loss", "--o", "eval loss")]
ACCURACY_SERIES = [("eval_accuracy", "-o", "eval accuracy"), ("eval_top5_accuracy", ":o", "eval top-5")]


# Curves ------------------------------------------------------------------------------------------


def write_curves(output_dir: str | Path) -> Path | None:
    """output_dir/curves.png from output_dir/trainer_state.json; None when there is no state yet."""
    state = Path(output_dir) / "trainer_state.json"
    if not state.is_file():
        return None
    history = json.loads(state.read_text())["log_history"]
    return plot_curves({Path(output_dir).name: history}, Path(output_dir) / "curves.png")


def plot_curves(runs: Mapping[str, list[dict]], path: str | Path) -> Path:
    """Loss (top) and accuracy (bottom) against wall time (left) and images seen (right), one color per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=CURVES_SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2)
    time_scale, time_unit = _time_scale(runs)
    x_axes = [("elapsed_seconds", f"wall time ({time_unit})", time_scale), ("images_seen", "images seen", 1.0)]
    for row, (quantity, series) in enumerate([("loss", LOSS_SERIES), ("accuracy", ACCURACY_SERIES)]):
        for col, (x_key, x_label, scale) in enumerate(x_axes):
            ax = axes[row][col]
            for index, (name, history) in enumerate(runs.items()):
                for key, style, label in series:
                    xs, ys = log_series(history, x_key, key)
                    if xs:
                        run_label = label if len(runs) == 1 else f"{name}: {label}"
                        line = style if len(xs) <= MARKERS_MAX_POINTS else style.replace("o", "")
                        if len(xs) == 1 and "o" not in line:
                            line += "o"  # a lone point draws no line: mark it
                        color = f"C{index % 10}"
                        ax.plot(np.asarray(xs) / scale, ys, line, color=color, label=run_label, markersize=3)
            ax.set_xlabel(x_label)
            ax.set_ylabel(quantity)
            if quantity == "loss" and ax.has_data():
                ax.set_yscale("log")  # late progress is a small fraction of the first loss: invisible on a linear axis
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize="small")
    return save_figure(fig, path)


def log_series(history: Sequence[dict], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    """(x, y) of the log entries that hold both keys."""
    points = [(entry[x_key], entry[y_key]) for entry in history if x_key in entry and y_key in entry]
    return [x for x, _ in points], [y for _, y in points]


def _time_scale(runs: Mapping[str, list[dict]]) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever keeps the axis numbers short."""
    longest = max((e.get("elapsed_seconds", 0.0) for history in runs.values() for e in history), default=0.0)
    if longest > 3 * 3600:
        return 3600.0, "h"
    if longest > 600:
        return 60.0, "min"
    return 1.0, "s"


# Evaluation breakdown ----------------------------------------------------------------------------


def evaluation_breakdown(predictions, label_ids, label_names: Sequence[str], output_dir: str | Path) -> dict:
    """Per-class accuracy and the most confused pairs, to merge into eval_results.json; draws confusion_matrix.png.

    `predictions` are top-k class indices, best first ([N, k], as metrics.top_k_predictions makes them).
    """
    top1 = np.asarray(predictions).reshape(len(label_ids), -1)[:, 0]
    matrix = confusion_matrix(top1, np.asarray(label_ids), len(label_names))
    plot_confusion_matrix(matrix, label_names, Path(output_dir) / "confusion_matrix.png")
    return {
        "eval_per_class_accuracy": per_class_accuracy(matrix, label_names),
        "eval_top_confusions": top_confusions(matrix, label_names, TOP_CONFUSIONS),
    }


def confusion_matrix(predicted, labels, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray, label_names: Sequence[str]) -> dict[str, float | None]:
    """Top-1 accuracy of each class (its recall); None for a class absent from the evaluation set."""
    support = matrix.sum(axis=1)
    return {
        name: (float(matrix[i, i] / support[i]) if support[i] else None) for i, name in enumerate(label_names)
    }


def top_confusions(matrix: np.ndarray, label_names: Sequence[str], count: int) -> list[dict]:
    """The `count` largest off-diagonal cells: which true class is taken for which, how often."""
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(errors, axis=None)[::-1][:count]
    support = matrix.sum(axis=1)
    pairs = []
    for true, predicted in zip(*np.unravel_index(order, errors.shape)):
        if errors[true, predicted] == 0:
            break
        pairs.append({
            "true": label_names[true],
            "predicted": label_names[predicted],
            "count": int(errors[true, predicted]),
            "fraction_of_true": float(errors[true, predicted] / support[true]),
        })
    return pairs


def plot_confusion_matrix(matrix: np.ndarray, label_names: Sequence[str], path: str | Path) -> Path:
    from matplotlib.figure import Figure

    n = len(label_names)
    small = n <= CELL_TEXT_MAX_CLASSES
    side = min(14.0, max(5.0, 2.0 + 0.4 * n))
    fig = Figure(figsize=(side, side) if small else WIDE_MATRIX_SIZE, dpi=DPI, layout="constrained")
    ax, text_ax = (fig.subplots(), None) if small else fig.subplots(1, 2, width_ratios=[3, 2])
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    # More cells than pixels: antialiasing averages them, where "nearest" would drop most errors.
    image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest" if small else "antialiased")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix\n{int(matrix.sum())} images, rows normalized")
    if small:
        _label_cells(ax, matrix, rows, label_names)
    else:
        _list_confusions(text_ax, top_confusions(matrix, label_names, TOP_CONFUSIONS))
    return save_figure(fig, path)


def _label_cells(ax, matrix: np.ndarray, rows: np.ndarray, label_names: Sequence[str]) -> None:
    names = [name if len(name) <= 14 else name[:13] + "…" for name in map(str, label_names)]
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    for true, predicted in np.ndindex(matrix.shape):
        if matrix[true, predicted]:
            color = "white" if rows[true, predicted] > 0.5 else "black"
            ax.text(predicted, true, str(matrix[true, predicted]), ha="center", va="center", fontsize=8, color=color)


def _list_confusions(ax, pairs: list[dict]) -> None:
    ax.axis("off")
    lines = [f"{p['true']} → {p['predicted']}: {p['count']} ({p['fraction_of_true']:.0%})" for p in pairs]
    ax.set_title("most confused (true → predicted)")
    ax.text(0.0, 1.0, "\n".join(lines) or "no errors", va="top", family="monospace", fontsize=9, transform=ax.transAxes)


def save_figure(fig, path: str | Path) -> Path:
    """A matplotlib Figure as a PNG at its stated size, on the Agg canvas (never pyplot: see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    FigureCanvasAgg(fig).print_png(path)  # not bbox_inches="tight": the image keeps its stated size
    return path
