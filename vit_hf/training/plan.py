"""`budget.plan: auto`: before training, time the candidate shapes on this machine's real data path and pick
the shape, batch, learning rate and regularization the budget buys (vit_hf/planning/rule.py says how;
docs/DESIGN.md, "The budget planner", says why).

The plan is logged up front and becomes the recipe: output_dir/recipe.yaml holds the planned values with
budget.plan off, so `python -m vit_hf.run OUT/recipe.yaml` repeats the run exactly without the probe.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from ..data.pipeline import Prepared
from ..modeling.build import build_model
from ..modeling.preprocessing import Preprocessing
from ..planning.candidates import Shape, candidates
from ..planning.rule import (
    CURVES,
    LEARNING_RATE,
    WARMUP_SHARE,
    batch_size_for,
    best,
    epochs_for,
    predicted_accuracy,
    regime_for,
)
from ..recipe.load import with_values
from ..recipe.schema import Recipe
from .budget import synchronize_device
from .build import make_trainer, run_options, use_channels_last
from .metrics import EvaluationMetrics

logger = logging.getLogger(__name__)

# The probe: a warm-up step (allocation, kernel selection), then timed steps at the planned batch.
PROBE_WARMUP_STEPS, PROBE_TIMED_STEPS = 1, 3
# The share of the budget the probe may take, and of the rest kept for the final evaluation and save
# (the budget measures those itself once training runs; here they only size the epochs).
PROBE_SHARE, FINAL_PHASE_SHARE = 0.05, 0.08
# A larger shape runs its FLOPs at least as fast as a smaller one (wider matrices), and at most this much
# faster: the bound used to skip probing a shape that could not win even at its best speed.
EFFICIENCY_GAIN_BOUND = 2.0


@dataclass
class Candidate:
    shape: Shape
    images_per_second: float | None = None  # measured; None: not probed
    epochs: float | None = None
    predicted: float | None = None  # holdout accuracy the rule expects on CIFAR-10-like data
    note: str = ""


@dataclass
class Plan:
    chosen: Candidate
    candidates: list[Candidate]
    values: dict[str, Any] = field(default_factory=dict)  # dotted recipe keys -> planned values
    probe_seconds: float = 0.0

    def log(self) -> None:
        logger.info("plan: %.1f s timing %d shapes on this machine's data path; the budget buys:",
                    self.probe_seconds, sum(c.images_per_second is not None for c in self.candidates))
        for c in self.candidates:
            rate = f"{c.images_per_second:,.0f} img/s" if c.images_per_second else "not timed"
            epochs = f"{c.epochs:.1f} epochs" if c.epochs is not None else "-"
            predicted = (f"{c.predicted:.1%} expected" if c.predicted is not None
                         else "no curve" if c.shape.name not in CURVES else "-")
            mark = "  <- chosen" if c is self.chosen else ""
            logger.info("plan:   %-16s %14s  %12s  %14s %s%s", c.shape.name, rate, epochs, predicted, c.note, mark)
        logger.info("plan: %s", ", ".join(f"{k}={v}" for k, v in self.values.items()))


def plan_recipe(recipe: Recipe, data: Prepared, prep: Preprocessing, args, label_names: list[str],
                metrics: EvaluationMetrics, seconds_left: float) -> tuple[Recipe, Plan]:
    """The recipe with the planned shape, batch, learning rate and regularization; the plan, for the log."""
    started = time.monotonic()
    train_images = len(data.train)
    train_seconds = seconds_left * (1 - PROBE_SHARE - FINAL_PHASE_SHARE)
    probe_until = started + max(3.0, PROBE_SHARE * seconds_left)
    pool = [Candidate(s) for s in candidates(prep.image_size, recipe.model.stem == "auto")]
    for candidate in _probe_order(pool, prep.image_size):
        if not _could_win(candidate, pool, train_seconds, train_images, prep.image_size):
            candidate.note = "(could not win: not timed)"
            continue
        if time.monotonic() > probe_until and any(c.images_per_second for c in pool):
            candidate.note = "(probe time spent: not timed)"
            continue
        batch = batch_size_for(max((c.images_per_second or 0.0 for c in pool), default=0.0))
        timed = time_shape(candidate.shape, batch, recipe, data, prep, args, label_names, metrics)
        if batch_size_for(timed) != batch:  # a fast machine: the planned batch is larger; time it at that
            batch = batch_size_for(timed)
            timed = time_shape(candidate.shape, batch, recipe, data, prep, args, label_names, metrics)
        candidate.images_per_second = timed
        candidate.epochs = epochs_for(train_seconds, timed, train_images)
        candidate.predicted = predicted_accuracy(candidate.shape, candidate.epochs)
    chosen = _choose(pool)
    values = planned_values(chosen, prep.image_size)
    plan = Plan(chosen, pool, values, probe_seconds=time.monotonic() - started)
    return with_values(recipe, {**values, "budget.plan": None}), plan


def time_shape(shape: Shape, batch: int, recipe: Recipe, data: Prepared, prep: Preprocessing, args,
               label_names: list[str], metrics: EvaluationMetrics) -> float:
    """Training images/s of `shape` at `batch` (time_training on the recipe with that shape)."""
    planned = with_values(recipe, _shape_values(shape, prep.image_size, batch))
    return time_training(planned, data, prep, args, label_names, metrics)


def _probe_order(pool: list[Candidate], image_size: int) -> list[Candidate]:
    """Cheapest first: it is timed whatever happens, and bounds the speed of the others."""
    return sorted(pool, key=lambda c: c.shape.train_flops(image_size))


def _could_win(candidate: Candidate, pool: list[Candidate], train_seconds: float, train_images: int,
               image_size: int) -> bool:
    """Whether `candidate`, at the fastest it could run (the cheapest timed shape's FLOP rate times
    EFFICIENCY_GAIN_BOUND), would beat the best timed shape's expected accuracy."""
    timed = [c for c in pool if c.images_per_second is not None]
    if not timed or candidate.shape.name not in CURVES:
        return not timed  # the first is always timed; a shape with no curve never wins
    reference = timed[0]
    flop_rate = reference.images_per_second * reference.shape.train_flops(image_size)
    fastest = EFFICIENCY_GAIN_BOUND * flop_rate / candidate.shape.train_flops(image_size)
    ceiling = predicted_accuracy(candidate.shape, epochs_for(train_seconds, fastest, train_images))
    leader = max((c.predicted for c in timed if c.predicted is not None), default=0.0)
    return ceiling is not None and ceiling > leader


def _choose(pool: list[Candidate]) -> Candidate:
    timed = [c for c in pool if c.images_per_second is not None]
    shape = best([(c.shape, c.predicted) for c in timed])
    return next(c for c in timed if c.shape == shape) if shape is not None else timed[0]


def _shape_values(shape: Shape, image_size: int, batch: int) -> dict[str, Any]:
    values = {f"model.{key}": value for key, value in shape.model_keys(image_size).items()}
    return {**values, "training.per_device_train_batch_size": batch}


def planned_values(chosen: Candidate, image_size: int) -> dict[str, Any]:
    """Every recipe key the plan sets: the shape, the batch and schedule, the regularization regime."""
    regime = regime_for(chosen.epochs or 0.0)
    values = _shape_values(chosen.shape, image_size, batch_size_for(chosen.images_per_second or 0.0))
    values |= {f"data.{key}": value for key, value in regime.data_keys(image_size).items()}
    return values | {
        "model.drop_path_rate": regime.drop_path_rate,
        "training.learning_rate": LEARNING_RATE,
        "training.warmup_steps": WARMUP_SHARE,
        "training.label_smoothing_factor": regime.label_smoothing,
    }


class _ProbeTimer(TrainerCallback):
    """Wall time of the steps after the warm-up, the device synchronized at both ends (on CUDA the host
    runs ahead of the queued steps)."""

    def __init__(self):
        self.started: float | None = None
        self.seconds: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == PROBE_WARMUP_STEPS:
            synchronize_device()
            self.started = time.perf_counter()
        elif state.global_step == PROBE_WARMUP_STEPS + PROBE_TIMED_STEPS:
            synchronize_device()
            self.seconds = time.perf_counter() - self.started


def time_training(recipe: Recipe, data: Prepared, prep: Preprocessing, args, label_names: list[str],
                  metrics: EvaluationMetrics) -> float:
    """Training images/s of the recipe's model on the run's data path, through a VitTrainer like the run's."""
    model = build_model(recipe.model, recipe.vit_config, label_names, prep.image_size)
    timer = _ProbeTimer()
    batch = recipe.training["per_device_train_batch_size"]
    with tempfile.TemporaryDirectory(prefix="vit_hf_plan_") as scratch:
        probe_args = dataclasses.replace(
            args, output_dir=scratch, max_steps=PROBE_WARMUP_STEPS + PROBE_TIMED_STEPS,
            per_device_train_batch_size=batch, eval_strategy="no", save_strategy="no", logging_strategy="no",
            report_to=[], push_to_hub=False, torch_compile=False, disable_tqdm=True, load_best_model_at_end=False,
        )
        channels_last = use_channels_last(model, args.device)  # timed as the run will train it
        options = run_options(recipe, prep, model, len(label_names), args.label_smoothing_factor, channels_last)
        trainer = make_trainer(model, probe_args, prep, metrics, options, train_dataset=data.train,
                               callbacks=[timer])
        trainer.train()
    images_per_step = min(batch, len(data.train)) * probe_args.world_size  # a tiny train set makes small batches
    return PROBE_TIMED_STEPS * images_per_step / timer.seconds
