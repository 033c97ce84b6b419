"""Hyperparameter search: `python -m vit_hf.run RECIPE --search`, as the recipe's `search:` section says.

Details: docs/DESIGN.md, "The hyperparameter search".
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback, set_seed

from ..data.pipeline import plan_loader, prepare
from ..data.sources import load_splits
from ..errors import RecipeError
from ..modeling.build import build_model
from ..modeling.preprocessing import resolve_preprocessing
from ..outputs.plots import save_figure
from ..recipe.durations import format_duration
from ..recipe.keys import set_dotted
from ..recipe.load import recipe_from_dict, with_values
from ..recipe.schema import Recipe
from ..recipe.search_space import Dimension, parse_space
from ..recipe.training_args import training_arguments
from ..training.budget import TimeBudget
from ..training.build import (
    budget_callback,
    calibrate_reserve,
    early_stopping,
    make_trainer,
    run_options,
    use_channels_last,
    with_loader_settings,
)
from ..training.ema import WeightEma
from ..training.metrics import EvaluationMetrics, load_metrics
from ..training.schedule import lr_shape_from_args
from ..training.stopping import NonFiniteGuard
from ..training.train import write_recipe

logger = logging.getLogger(__name__)

RESULTS_CSV, BEST_RECIPE, PLOT = "search_results.csv", "best_recipe.yaml", "search.png"


OBJECTIVE = "eval_accuracy"


# Kept back from search.time for the outputs: the table, the best recipe and the plot (matplotlib's import).
WRAP_UP_SECONDS = 3.0


# A shorter trial is mostly start-up and final evaluation: its accuracy would say little.
MIN_TRIAL_SECONDS = 5.0


def search(recipe: Recipe, started_at: float | None = None, clock=time.monotonic) -> Path:
    """Run the recipe's search; returns the path of best_recipe.yaml."""
    import optuna  # optional: pip install vit_hf[search]

    started_at = clock() if started_at is None else started_at
    if not recipe.search.space:
        raise RecipeError("--search: the recipe has no search.space; add a search section "
                          "(python -m vit_hf.run --help)")
    plan = TrialPlan.from_recipe(recipe)
    args = training_arguments(plan.base)
    if args.world_size > 1:
        raise RecipeError("--search runs its trials in one process: launch it with python -m vit_hf.run, not "
                          "torchrun or accelerate launch (those are for the final run, best_recipe.yaml)")
    metrics = load_metrics(plan.base.evaluation.metrics)  # every trial's: a search cannot change them
    write_recipe(recipe, args)
    set_seed(args.seed)
    shared = SharedData.load(plan.base, args)
    budgets = TrialBudgets.for_search(recipe, started_at, clock)
    cfg = recipe.search
    pruner = optuna.pruners.NopPruner() if cfg.prune_after is None else optuna.pruners.MedianPruner(
        n_startup_trials=cfg.prune_after)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=pruner)
    for _ in range(cfg.n_trials):
        trial = study.ask()
        score = run_trial(trial, plan, shared, metrics, budgets, Path(args.output_dir))
        if score is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, score)
    return write_outputs(study, recipe, plan.dims, Path(args.output_dir))


@dataclass
class SharedData:
    """What every trial shares: the splits, decoded once into their store, and the preprocessing."""

    splits: Any
    data: Any
    prep: Any
    loader: Any

    @classmethod
    def load(cls, base: Recipe, args) -> "SharedData":
        splits = load_splits(base.data, args.seed)
        prep = resolve_preprocessing(base)
        loader = plan_loader(base.data, splits, prep.image_size, args, base.training)
        data = prepare(base.data, splits, prep.image_size, prep.crop_pct, loader,
                       with_loader_settings(args, loader.settings, base.training))
        return cls(splits, data, prep, loader)


def run_trial(trial, plan: "TrialPlan", shared: SharedData, metrics: EvaluationMetrics, budgets: "TrialBudgets",
              out: Path) -> float | None:
    """One trial: the recipe with its values, trained and evaluated; its score, or None when pruned."""
    import optuna

    recipe = plan.recipe_for(trial)
    recipe.training["output_dir"] = str(out / "trials" / f"trial-{trial.number + 1:03d}")  # its own logs
    args = with_loader_settings(training_arguments(recipe), shared.loader.settings,
                                recipe.training)
    budget = budgets.start_trial()
    model = build_model(recipe.model, recipe.vit_config, shared.splits.label_names, shared.prep.image_size)
    ema = WeightEma(recipe.extras.ema_decay) if recipe.extras.ema_decay is not None else None
    guard = NonFiniteGuard(recipe.early_stopping.on_nonfinite_loss)
    budgeting = budget_callback(budget, args, shared.splits.eval_images, model, shared.splits.train) if budget \
        else None
    callbacks = [early_stopping(recipe), budgeting, ema, guard, TrialReport(trial)]
    options = run_options(recipe, shared.prep, model, len(shared.splits.label_names), args.label_smoothing_factor,
                          use_channels_last(model, args.device))  # a trial trains as the run would
    trainer = make_trainer(
        model, args, shared.prep, metrics, options,
        train_dataset=shared.data.train, eval_dataset=shared.data.eval,
        callbacks=[c for c in callbacks if c is not None], budget=budget,
        lr_shape=lr_shape_from_args(args) if budget else None, ema=ema, guard=guard,
    )
    if budgeting is not None:
        calibrate_reserve(trainer, budgeting, shared.data.eval)
    logger.info("search: trial %d of %d%s: %s", trial.number + 1, budgets.n_trials,
                f", {format_duration(budget.seconds)}" if budget else "",
                ", ".join(f"{key}={_show(value)}" for key, value in trial.params.items()))
    started = budgets.clock()
    try:
        trainer.train()
    except optuna.TrialPruned:
        _record(trial, trainer, "pruned", budgets.clock() - started)
        return None
    score = trainer.evaluate()[OBJECTIVE]  # the final evaluation, not the last one during training
    _record(trial, trainer, f"accuracy {score:.4f}", budgets.clock() - started)
    return score


class TrialReport(TrainerCallback):
    """Each evaluation during a trial goes to optuna; a trial its pruner drops ends there (optuna.TrialPruned)."""

    def __init__(self, trial):
        self.trial = trial
        self.reported_steps: set[int] = set()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        # The final evaluation can fall on the step of the last one during training: optuna keeps one per step.
        if metrics and OBJECTIVE in metrics and state.global_step not in self.reported_steps:
            self.reported_steps.add(state.global_step)
            self.trial.report(metrics[OBJECTIVE], state.global_step)
            if self.trial.should_prune():
                raise optuna.TrialPruned()


def _record(trial, trainer, outcome: str, seconds: float) -> None:
    trial.set_user_attr("seconds", round(seconds, 2))
    trial.set_user_attr("steps", trainer.state.global_step)
    logger.info("search: trial %d: %s at step %d, %.1fs", trial.number + 1, outcome, trainer.state.global_step,
                seconds)


@dataclass
class TrialPlan:
    """The recipe every trial starts from, and the dimensions a trial sets in it."""

    dims: list[Dimension]
    base: Recipe  # the recipe every trial starts from; each sets its values on a copy

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "TrialPlan":
        raw = recipe.to_dict()
        raw.pop("search")
        # Trials are compared, not kept: no checkpoints (their time is the trial's), no pushes, no resuming.
        raw["training"].update(save_strategy="no", load_best_model_at_end=False, push_to_hub=False)
        raw["budget"]["save_every"] = None
        raw["resume"] = "never"
        if recipe.search.time is not None:
            # Each trial gets a TimeBudget of its own (TrialBudgets); with a budget, training_arguments
            # leaves the loop length to it.
            raw["budget"]["time"] = recipe.search.time / recipe.search.n_trials
        return cls(parse_space(recipe.search.space), recipe_from_dict(raw))

    def values(self, trial) -> dict[str, Any]:
        return {dim.key: dim.suggest(trial) for dim in self.dims}

    def recipe_for(self, trial) -> Recipe:
        return with_values(self.base, self.values(trial))


@dataclass
class TrialBudgets:
    """Each trial's TimeBudget: an even share of the search time left, or budget.time for each trial."""

    n_trials: int
    deadline: float | None  # clock() by which the last trial has ended
    seconds_each: float | None
    clock: Callable[[], float]
    started: int = 0

    @classmethod
    def for_search(cls, recipe: Recipe, started_at: float, clock) -> "TrialBudgets":
        cfg = recipe.search
        if cfg.time is None:
            return cls(cfg.n_trials, None, recipe.budget.time, clock)
        budgets = cls(cfg.n_trials, started_at + cfg.time - WRAP_UP_SECONDS, None, clock)
        share = budgets.next_share()
        if share < MIN_TRIAL_SECONDS:
            raise RecipeError(
                f"search.time: {format_duration(cfg.time)} leaves {share:.1f}s for each of {cfg.n_trials} trials "
                f"after {format_duration(clock() - started_at)} of data loading; give a trial at least "
                f"{MIN_TRIAL_SECONDS:.0f}s: raise search.time or lower search.n_trials"
            )
        return budgets

    def next_share(self) -> float | None:
        if self.deadline is None:
            return self.seconds_each
        return (self.deadline - self.clock()) / max(1, self.n_trials - self.started)

    def start_trial(self) -> TimeBudget | None:
        seconds = self.next_share()
        self.started += 1
        return None if seconds is None else TimeBudget(seconds, started_at=self.clock(), clock=self.clock)


def write_outputs(study, recipe: Recipe, dims: list[Dimension], out: Path) -> Path:
    """search_results.csv, best_recipe.yaml and search.png in `out`; returns best_recipe.yaml's path."""
    rows = result_rows(study)
    write_table(rows, dims, out / RESULTS_CSV)
    path = write_best_recipe(recipe, study.best_trial, len(rows), out)
    plot_search(rows, dims, study.best_trial.number + 1, out / PLOT)
    for row in rows:
        logger.info("search: trial %d %s: accuracy %s, %ss, %s steps", row["trial"], row["state"],
                    _show(row["accuracy"]), row["seconds"], row["steps"])
    logger.info("search: best is trial %d (accuracy %.4f); train it: python -m vit_hf.run %s",
                study.best_trial.number + 1, study.best_value, path)
    return path


def result_rows(study) -> list[dict[str, Any]]:
    """One row per trial: its number (from 1), state, accuracy (a pruned trial's last evaluation), time, values."""
    rows = []
    for trial in study.trials:
        accuracy = trial.value
        if accuracy is None and trial.intermediate_values:
            accuracy = trial.intermediate_values[max(trial.intermediate_values)]
        rows.append({
            "trial": trial.number + 1,
            "state": trial.state.name.lower(),
            "accuracy": accuracy,
            "seconds": trial.user_attrs.get("seconds"),
            "steps": trial.user_attrs.get("steps"),
            **trial.params,
        })
    return rows


def write_table(rows: list[dict[str, Any]], dims: list[Dimension], path: Path) -> None:
    with path.open("w", newline="") as file:
        columns = ["trial", "state", "accuracy", "seconds", "steps", *(d.key for d in dims)]
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_best_recipe(recipe: Recipe, best, n_trials: int, out: Path) -> Path:
    """The recipe with the best trial's values, without its search section, training into out/best."""
    raw = recipe.to_dict()
    raw.pop("search")
    for key, value in best.params.items():
        set_dotted(raw, key, value)
    raw["training"]["output_dir"] = str(out / "best")
    best_recipe = recipe_from_dict(raw)  # checked as any recipe
    path = out / BEST_RECIPE
    header = (f"# The best of {n_trials} trials of vit_hf --search on {recipe.source}: trial {best.number + 1}, "
              f"accuracy {best.value:.4f}.\n# Train it: python -m vit_hf.run {path}\n")
    path.write_text(header + best_recipe.to_yaml())
    return path


def plot_search(rows: list[dict[str, Any]], dims: list[Dimension], best: int, path: Path) -> None:
    """Accuracy per trial and, when the space has a numeric dimension (the learning rate first), against it."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    numeric = [d for d in dims if d.kind != "categorical"]
    against = next((d for d in numeric if d.key == "training.learning_rate"), numeric[0] if numeric else None)
    fig = Figure(figsize=(11 if against else 6, 4.5), dpi=100, layout="constrained")
    fig.suptitle(f"{len(rows)} trials; best: trial {best}")
    axes = fig.subplots(1, 2 if against else 1, squeeze=False)[0]
    _scatter(axes[0], rows, "trial", best)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    if against is not None:
        _scatter(axes[1], rows, against.key, best, log=against.kind == "log_uniform")
    save_figure(fig, path)


def _scatter(ax, rows: list[dict[str, Any]], x_key: str, best: int, log: bool = False) -> None:
    for state, style in (("complete", {"marker": "o", "color": "C0"}), ("pruned", {"marker": "x", "color": "0.5"})):
        shown = [r for r in rows if r["state"] == state and r["accuracy"] is not None]
        if shown:
            label = "complete" if state == "complete" else "pruned (last evaluation)"
            ax.scatter([r[x_key] for r in shown], [r["accuracy"] for r in shown], label=label, **style)
    top = next(r for r in rows if r["trial"] == best)
    ax.scatter([top[x_key]], [top["accuracy"]], marker="*", s=250, facecolors="none", edgecolors="C3", label="best")
    ax.set_xlabel(x_key)
    ax.set_ylabel("eval accuracy")
    if log:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize="small")


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
