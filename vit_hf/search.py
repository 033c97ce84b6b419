"""Hyperparameter search: `python -m vit_hf.run RECIPE --search`, as the recipe's `search:` section says.

    search:
      n_trials: 12
      time: 4h                        # the whole search
      space:
        learning_rate: {type: log_uniform, low: 1.0e-4, high: 3.0e-3}
        data.mixup_alpha: {type: uniform, low: 0.0, high: 0.8}

The trials run through `Trainer.hyperparameter_search` (optuna backend), one after the other in
this process, on data decoded once. Each trial is a budgeted run of the recipe with the trial's
values (search_space.py): a fresh model (`model_init`), its training arguments, augmentation, early
stopping and EMA, and a fresh TimeBudget with an even share of the search time left, so its
learning rate anneals to its own deadline. Its score is a final evaluation at that deadline, as a
real run's eval_results.json. Evaluations during a trial go to optuna, whose MedianPruner stops a
trial that trails the earlier ones at the same step (search.prune_after).

training.output_dir then holds search_results.csv (one row per trial), search.png (accuracy per
trial and against the learning rate), and best_recipe.yaml: the recipe with the best trial's values
and no search section, training into output_dir/best: `python -m vit_hf.run OUT/best_recipe.yaml`.
"""

from __future__ import annotations

import copy
import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .budget import TimeBudget, lr_shape_from_args
from .durations import format_duration
from .errors import RecipeError
from .recipe import Recipe, build_training_arguments, recipe_from_dict, set_dotted
from .search_space import Dimension, parse_space
from .train import (
    Preprocessing,
    calibrate_reserve,
    make_trainer,
    resolve_preprocessing,
    run_options,
    stopping_callbacks,
    training_values,
    with_loader_settings,
    write_recipe,
)
from .trainer import VitTrainer

logger = logging.getLogger(__name__)

RESULTS_CSV, BEST_RECIPE, PLOT = "search_results.csv", "best_recipe.yaml", "search.png"
OBJECTIVE = "eval_accuracy"
# Kept back from search.time for the outputs: the table, the best recipe and the plot (matplotlib's import).
WRAP_UP_SECONDS = 3.0
# A shorter trial is mostly start-up and final evaluation: its accuracy would say little.
MIN_TRIAL_SECONDS = 5.0
STUDY_NAME = "vit_hf"


def search(recipe: Recipe, started_at: float | None = None, clock=time.monotonic) -> Path:
    """Run the recipe's search; returns the path of best_recipe.yaml."""
    from transformers import set_seed

    from .data.pipeline import plan_loader, prepare
    from .data.sources import load_splits

    started_at = clock() if started_at is None else started_at
    if not recipe.search.space:
        raise RecipeError("--search: the recipe has no search.space; add a search section (python -m vit_hf.run --help)")
    plan = TrialPlan.from_recipe(recipe)
    args = build_training_arguments(training_values(plan.base))
    if args.world_size > 1:
        raise RecipeError("--search runs its trials in one process: launch it with python -m vit_hf.run, not "
                          "torchrun or accelerate launch (those are for the final run, best_recipe.yaml)")
    write_recipe(recipe, args)
    set_seed(args.seed)
    splits = load_splits(plan.base.data, args.seed)
    prep = resolve_preprocessing(plan.base)
    loader = plan_loader(plan.base.data, splits, prep.image_size, args, plan.base.training)
    args = with_loader_settings(args, loader.settings, plan.base.training)
    prepared = prepare(plan.base.data, splits, prep.image_size, prep.crop_pct, loader, args)
    budgets = TrialBudgets.for_search(recipe, started_at, clock)
    trainer = make_trainer(
        None, args, prep, trainer_class=SearchTrainer, plan=plan, budgets=budgets, splits=splits,
        preprocessing=prep, train_dataset=prepared.train, eval_dataset=prepared.eval,
    )
    study = run_study(trainer, recipe.search, args.seed)
    return write_outputs(study, recipe, plan.dims, Path(args.output_dir))


def run_study(trainer: "SearchTrainer", cfg, seed: int):
    """Trainer.hyperparameter_search with optuna; returns the study, every trial in it."""
    import optuna

    storage = optuna.storages.InMemoryStorage()  # so that the study can be read back whole afterwards
    no_pruning = cfg.prune_after is None
    trainer.hyperparameter_search(
        hp_space=trainer.plan.hp_space,
        compute_objective=lambda metrics: metrics[OBJECTIVE],
        n_trials=cfg.n_trials,
        direction="maximize",
        backend="optuna",
        storage=storage,
        study_name=STUDY_NAME,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.NopPruner() if no_pruning else optuna.pruners.MedianPruner(n_startup_trials=cfg.prune_after),
    )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


# --- One recipe per trial ------------------------------------------------------------------------


@dataclass
class TrialPlan:
    """The recipe every trial starts from, and the dimensions a trial sets in it."""

    raw: dict[str, Any]
    dims: list[Dimension]
    base: Recipe

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "TrialPlan":
        raw = recipe.to_dict()
        raw.pop("search")
        # Trials are compared, not kept: no checkpoints (their time is the trial's), no pushes, no resuming.
        raw["training"].update(save_strategy="no", load_best_model_at_end=False, push_to_hub=False)
        raw["budget"]["save_every"] = None
        raw["resume"] = "never"
        if recipe.search.time is not None:
            # Each trial gets a TimeBudget of its own (TrialBudgets); with a budget, training_values
            # leaves the loop length to it.
            raw["budget"]["time"] = recipe.search.time / recipe.search.n_trials
        return cls(raw, parse_space(recipe.search.space), recipe_from_dict(copy.deepcopy(raw)))

    def values(self, trial) -> dict[str, Any]:
        return {dim.key: dim.suggest(trial) for dim in self.dims}

    def recipe_for(self, trial) -> Recipe:
        raw = copy.deepcopy(self.raw)
        for key, value in self.values(trial).items():
            set_dotted(raw, key, value)
        return recipe_from_dict(raw)

    def hp_space(self, trial) -> dict[str, Any]:
        self.values(trial)
        # Nothing for the Trainer to set itself: its setter casts each value to the type of the argument's
        # current value (warmup_steps 0.1, a ratio, would become int 0) and knows no data or model keys.
        # SearchTrainer applies the whole trial instead.
        return {}

    @property
    def training_keys(self) -> list[str]:
        return [dim.key.split(".", 1)[1] for dim in self.dims if dim.key.startswith("training.")]


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


# --- The Trainer, per trial --------------------------------------------------------------------------


class SearchTrainer(VitTrainer):
    """A VitTrainer whose recipe-made pieces are made anew for each trial of hyperparameter_search.

    Trainer.train(trial=...) calls model_init(trial), then _hp_search_setup(trial), then builds the
    optimizer and the scheduler: the trial's arguments, budget and callbacks are in place by then.
    """

    def __init__(self, *args, plan: TrialPlan, budgets: TrialBudgets, splits, preprocessing: Preprocessing, **kwargs):
        # Set before the Trainer's __init__, which calls model_init.
        self.plan, self.budgets, self.splits, self.preprocessing = plan, budgets, splits, preprocessing
        self.trial_callbacks: list = []
        self.trial_started = 0.0
        super().__init__(*args, model_init=self.build_model, **kwargs)

    def build_model(self, trial=None):
        from .models import build_model

        recipe = self.plan.base if trial is None else self.plan.recipe_for(trial)
        return build_model(recipe.model, recipe.vit_config, self.splits.label_names, self.preprocessing.image_size)

    def _hp_search_setup(self, trial) -> None:
        if trial is None or self.hp_search_backend is None:
            return super()._hp_search_setup(trial)
        recipe = self.plan.recipe_for(trial)
        self._apply_training_values(recipe)  # before the Trainer rebuilds the accelerator from the arguments
        super()._hp_search_setup(trial)
        self._start_trial(trial, recipe)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        import optuna

        if trial is None:
            return super().train(resume_from_checkpoint, trial, **kwargs)
        try:
            output = super().train(resume_from_checkpoint, trial, **kwargs)
        except optuna.TrialPruned:
            self._record(trial, "pruned")
            raise
        # The trial's score is its final evaluation, not its last one during training.
        self.objective = self.compute_objective(self.evaluate())
        self._record(trial, f"accuracy {self.objective:.4f}")
        return output

    def _apply_training_values(self, recipe: Recipe) -> None:
        trial_args = build_training_arguments(training_values(recipe))  # TrainingArguments' own checks
        for key in self.plan.training_keys:
            setattr(self.args, key, getattr(trial_args, key))

    def _start_trial(self, trial, recipe: Recipe) -> None:
        """The trial's budget, schedule, augmentation and callbacks: as train.train makes them for a run."""
        from .ema import ema_callbacks

        self.budget = self.budgets.start_trial()
        self.trial_started = self.budgets.clock()
        self.lr_shape = lr_shape_from_args(self.args) if self.budget else None
        options = run_options(recipe, self.preprocessing, self.model, len(self.splits.label_names),
                              self.args.label_smoothing_factor)
        for name, value in options.items():  # the VitTrainer attributes its __init__ sets from the same names
            setattr(self, name, value)
        self._replace_trial_callbacks([
            *stopping_callbacks(recipe, self.args, self.budget, self.model, self.splits, self.eval_dataset),
            *ema_callbacks(recipe.extras.ema_decay),
        ])
        if self.budget is not None:
            calibrate_reserve(self, self.eval_dataset)
        budget = f", {format_duration(self.budget.seconds)}" if self.budget else ""
        logger.info("search: trial %d of %d%s: %s", trial.number + 1, self.budgets.n_trials, budget,
                    ", ".join(f"{key}={_show(value)}" for key, value in trial.params.items()))

    def _replace_trial_callbacks(self, callbacks: list) -> None:
        # Early stopping, the budget and EMA keep state through a run: each trial needs new ones.
        for callback in self.trial_callbacks:
            self.remove_callback(callback)
        for callback in callbacks:
            self.add_callback(callback)
        self.trial_callbacks = callbacks

    def _record(self, trial, outcome: str) -> None:
        seconds = self.budgets.clock() - self.trial_started
        trial.set_user_attr("seconds", round(seconds, 2))
        trial.set_user_attr("steps", self.state.global_step)
        logger.info("search: trial %d: %s at step %d, %.1fs", trial.number + 1, outcome, self.state.global_step, seconds)


# --- Outputs ---------------------------------------------------------------------------------------------


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
        writer = csv.DictWriter(file, fieldnames=["trial", "state", "accuracy", "seconds", "steps", *(d.key for d in dims)])
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
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
    FigureCanvasAgg(fig).print_png(path)  # Agg directly: a search must not change pyplot's backend


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
