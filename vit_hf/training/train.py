"""train(recipe): the whole story of a training run, one call a step.

recipe -> TrainingArguments -> datasets -> model -> decoded stores -> VitTrainer and callbacks (build.py)
-> training (budget, checkpoints, signals, non-finite guard) -> final evaluation -> output_dir -> Hub.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from transformers import set_seed

from ..data.pipeline import build_caches, decodes_as_read, plan_loader, prepare
from ..data.sources import load_splits
from ..errors import RecipeError
from ..hub.card import write_model_card
from ..modeling.build import build_model, count_parameters
from ..modeling.preprocessing import Preprocessing, resolve_preprocessing
from ..outputs.layout import latest_checkpoint
from ..outputs.plots import evaluation_breakdown, write_curves
from ..outputs.summary import format_summary
from ..recipe.durations import format_duration
from ..recipe.load import load_recipe
from ..recipe.schema import Recipe
from ..recipe.training_args import training_arguments
from .build import Run, build_run, make_budget, resume_stream, with_loader_settings
from .checkpoints import guarded_final_save
from .metrics import load_metrics
from .monitor import images_per_step
from .plan import plan_recipe
from .resume import resolve_checkpoint
from .stopping import train_guarded

logger = logging.getLogger(__name__)


def train(recipe: Recipe, started_at: float | None = None, clock=time.monotonic) -> dict[str, float]:
    """Train as the recipe says; returns the final evaluation metrics ({} when stopped by a signal)."""
    started_at = clock() if started_at is None else started_at
    args = training_arguments(recipe)
    metrics = load_metrics(recipe.evaluation.metrics)  # a Hub metric that cannot be loaded fails here, before the data
    checkpoint = resolve_checkpoint(recipe.resume, args)  # before the data: a bad path fails early
    recipe = resumed_plan(recipe, checkpoint, args)  # a planned run that resumes keeps its plan
    write_recipe(recipe, args)
    set_seed(args.seed)
    splits = load_splits(recipe.data, args.seed)
    prep = resolve_preprocessing(recipe)
    planning = recipe.budget.plan == "auto"  # the plan chooses the model, after the data is ready
    model = None if planning else build_model(recipe.model, recipe.vit_config, splits.label_names, prep.image_size)
    args, data = prepared_data(recipe, args, splits, prep)
    args, position = resume_stream(args, data.train, checkpoint)  # a stream continues where its checkpoint was
    budget = make_budget(recipe, started_at, clock, checkpoint)
    if planning:
        recipe, args = plan_run(recipe, data, prep, args, splits.label_names, metrics, budget)
        model = build_model(recipe.model, recipe.vit_config, splits.label_names, prep.image_size)
    run = build_run(recipe, args, model, splits, data, prep, metrics, budget, started_at, clock, position)
    log_plan(recipe, args, run, splits, prep, checkpoint)
    with run.signals:
        train_guarded(run, checkpoint)  # NaN: exit 4, a checkpoint kept; a failed save: exit 5
    if run.checkpointing.interrupted:
        return report_interrupted(run.trainer, args)
    return finish(run.trainer, args, run.monitor)


def prepared_data(recipe: Recipe, args, splits, prep: Preprocessing):
    """(args, data): the store that fits and the DataLoader settings it needs (workers, pinning), then the
    decoded stores themselves: the decode-once caches built, or reused."""
    loader = plan_loader(recipe.data, splits, prep.image_size, args, recipe.training)
    args = with_loader_settings(args, loader.settings, recipe.training)
    return args, prepare(recipe.data, splits, prep.image_size, prep.crop_pct, loader, args)


def prepare_data(recipe: Recipe) -> None:
    """--prepare-data: download the dataset and build its decode-once caches, then stop. A run's first minutes,
    outside its budget: for ImageNet, hours of download and minutes of decoding that a 24 h budget should not pay.
    Only the cache files: no store in RAM or on the device, no model, so any node with the disk can do it."""
    args = training_arguments(recipe)
    splits = load_splits(recipe.data, args.seed)
    if decodes_as_read(recipe.data):
        logger.info("data: %s is ready, and has no cache to build: data.streaming or data.loader: decode decodes "
                    "its images as they are read", recipe.data.dataset)
        return
    prep = resolve_preprocessing(recipe)
    build_caches(recipe.data, splits, prep.image_size, prep.crop_pct, args)
    logger.info("data: the decode-once caches are ready; the same command without --prepare-data trains from them")


def plan_run(recipe: Recipe, data, prep: Preprocessing, args, label_names, metrics, budget):
    """budget.plan: auto (training/plan.py): the planned recipe and its TrainingArguments; recipe.yaml holds
    the plan, and the seed is set again so the run is the one `python -m vit_hf.run OUT/recipe.yaml` repeats."""
    if args.world_size > 1:
        raise RecipeError("budget.plan: auto plans on one process: run it once without torchrun, then launch "
                          "OUT/recipe.yaml (the planned recipe) with torchrun")
    recipe, plan = plan_recipe(recipe, data, prep, args, label_names, metrics, budget.remaining())
    plan.log()
    args = with_loader_settings(training_arguments(recipe), data.choice.settings, recipe.training)
    write_recipe(recipe, args)
    set_seed(args.seed)
    return recipe, args


def resumed_plan(recipe: Recipe, checkpoint: str | None, args) -> Recipe:
    """A planned run resumed from a checkpoint continues with the plan its first process made (recipe.yaml):
    timing the shapes again could choose another one, which the checkpoint's weights do not fit."""
    saved = Path(args.output_dir) / "recipe.yaml"
    if recipe.budget.plan != "auto" or checkpoint is None or not saved.is_file():
        return recipe
    logger.info("plan: resuming with the plan in %s", saved)
    return load_recipe(saved)


def write_recipe(recipe: Recipe, args) -> None:
    """output_dir/recipe.yaml: the resolved recipe; `python -m vit_hf.run output_dir/recipe.yaml` reruns it."""
    if not args.should_save:
        return
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "recipe.yaml").write_text(recipe.to_yaml())


def log_plan(recipe: Recipe, args, run: Run, splits, prep: Preprocessing, checkpoint: str | None) -> None:
    """The derived numbers, up front (nanoGPT habit): what one step, one epoch and the budget mean."""
    trainer, budget, step_images = run.trainer, run.trainer.budget, images_per_step(args)
    n_train = len(splits.train) if hasattr(splits.train, "__len__") else None
    lines = [
        f"data: {recipe.data.dataset} | {len(splits.label_names)} classes | train "
        f"{n_train if n_train is not None else 'stream'} | eval "
        f"{len(splits.eval) if hasattr(splits.eval, '__len__') else 'stream'} | {prep.image_size}px",
        f"model: {type(trainer.model).__name__} {count_parameters(trainer.model) / 1e6:.2f}M parameters, "
        f"patch {getattr(trainer.model.config, 'patch_size', '?')}, attention "
        f"{trainer.model.config._attn_implementation}",
        f"augment: {trainer.options.train_augment!r}",
        f"mixing: {trainer.options.mixing!r}, resolution: {trainer.options.resolution!r}",
        f"step: {step_images} images ({args.per_device_train_batch_size} x {args.world_size} devices x "
        f"{args.gradient_accumulation_steps} accumulation), lr {args.learning_rate:g}, "
        f"{args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, 'value') else args.lr_scheduler_type}",
    ]
    if n_train:
        lines.append(f"epoch: {math.ceil(n_train / step_images)} steps")
    if budget is not None:
        lines.append(
            f"budget: {format_duration(budget.seconds)} for the whole run, {format_duration(budget.remaining())} "
            "left now; the learning rate anneals to the budget's end"
        )
    if checkpoint:
        lines.append(f"resume: from {checkpoint}")
    if run.save_every:
        lines.append(f"checkpoints: also every {format_duration(run.save_every)} of wall time (budget.save_every)")
    for line in lines:
        logger.info(line)


def report_interrupted(trainer, args) -> dict[str, float]:
    """After a SIGTERM/SIGINT: the checkpoint is written (and pushed, per hub_strategy); say how to go on."""
    pushed = args.push_to_hub and args.hub_strategy != "end"  # HubStrategy is a str enum
    if pushed:
        trainer.hub.wait_for_background_pushes(trainer)
        pushed = not trainer.hub.pushes.failures
    logger.warning(
        "stopped by a signal at step %d; checkpoint in %s%s. Rerun the same command to resume (resume: auto).",
        trainer.state.global_step,
        latest_checkpoint(args.output_dir),
        f", pushed to {trainer.hub_model_id}" if pushed else "",
    )
    return {}


def finish(trainer, args, monitor) -> dict[str, float]:
    """The final evaluation, then model, image processor, metrics, state, curves and card into
    output_dir, then the Hub.

    Raises SaveFailed (disk full: the newest checkpoint is intact) or PushFailed (the model is saved
    locally), both after logging what was kept."""
    final_phase_start = time.monotonic()
    # predict(), not evaluate(): the same metrics, and the predictions for the per-class breakdown.
    output = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    metrics = output.metrics
    trainer.log(dict(metrics))  # as evaluate() does; a copy, so the log's keys stay out of eval_results.json
    trainer.log_metrics("eval", metrics)
    with monitor.timed("saving"), guarded_final_save(args.output_dir):
        breakdown = {}
        if args.should_save:
            config = trainer.model.config
            names = [config.id2label[i] for i in range(config.num_labels)]
            breakdown = evaluation_breakdown(output.predictions, output.label_ids, names, args.output_dir)
        trainer.save_metrics("eval", metrics | breakdown)
        trainer.save_model(_internal_call=True)  # only saves: pushing is hub.push_at_end's, with retries
        trainer.save_state()
        if args.should_save:
            write_curves(args.output_dir)
            write_model_card(args.output_dir)
    if trainer.budget is not None:
        logger.info("budget: the final evaluation and save took %.1f s (%.1f s were kept for them); %.1f s of the "
                    "budget left", time.monotonic() - final_phase_start, trainer.budget.reserve,
                    trainer.budget.remaining())
    logger.info("\n%s", format_summary(metrics, trainer.state, monitor.timing, args.output_dir, trainer.budget,
                                       trainer.compute_metrics.names))
    if args.push_to_hub:
        trainer.hub.push_at_end(trainer, trainer.budget)
    return metrics
