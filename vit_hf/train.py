"""train(recipe): the whole story of a training run, top to bottom.

recipe -> datasets -> decode -> ViT -> VitTrainer (device augmentation, budget) -> final evaluation
-> output_dir (model, image processor, recipe, metrics, trainer state) -> Hub.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .budget import (
    SUPPORTED_SCHEDULES,
    BudgetCallback,
    ReserveEstimate,
    TimeBudget,
    lr_shape_from_args,
    measure_eval_seconds_per_image,
)
from .callbacks import RunMonitor, use_budget_progress_bar
from .checkpoints import (
    CheckpointCallback,
    GracefulStop,
    latest_checkpoint,
    read_budget_state,
    resolve_checkpoint,
    resolve_save_every,
)
from .config import IMAGENET_MEAN, IMAGENET_STD
from .durations import format_duration
from .errors import RecipeError
from .recipe import Recipe, build_training_arguments
from .sync import StopStepReport

logger = logging.getLogger(__name__)

# With a time budget and no step or epoch limit, the budget ends training; the Trainer still
# needs a finite loop length.
UNLIMITED_EPOCHS = 1_000_000
UNLIMITED_STEPS = 1_000_000_000


@dataclass
class Preprocessing:
    image_size: int
    crop_pct: float
    mean: list[float]
    std: list[float]


def train(recipe: Recipe, started_at: float | None = None, clock=time.monotonic) -> dict[str, float]:
    """Train as the recipe says; returns the final evaluation metrics ({} when stopped by a signal)."""
    from transformers import set_seed

    from .data.pipeline import plan_loader, prepare
    from .data.sources import load_splits
    from .ema import ema_callbacks
    from .guards import NonFiniteGuard, train_guarded
    from .models import build_model
    from .sync_check import HostSyncCheck

    started_at = clock() if started_at is None else started_at
    args = build_training_arguments(training_values(recipe))
    checkpoint = resolve_checkpoint(recipe.resume, args)  # before the data: a bad path fails early
    write_recipe(recipe, args)
    set_seed(args.seed)

    splits = load_splits(recipe.data, args.seed)
    prep = resolve_preprocessing(recipe)
    model = build_model(recipe.model, recipe.vit_config, splits.label_names, prep.image_size)
    channels_last = use_channels_last(model, args.device)
    loader = plan_loader(recipe.data, splits, prep.image_size, args, recipe.training)
    args = with_loader_settings(args, loader.settings, recipe.training)
    prepared = prepare(recipe.data, splits, prep.image_size, prep.crop_pct, loader, args)
    train_set, eval_set = prepared.train, prepared.eval

    budget = make_budget(recipe, started_at, clock, checkpoint)
    save_every = resolve_save_every(recipe.budget.save_every, recipe.budget.time)
    checkpointing = CheckpointCallback(save_every=save_every, clock=clock)
    monitor = RunMonitor(budget=budget, started_at=started_at, clock=clock, loader=loader.kind)
    guard = NonFiniteGuard(recipe.early_stopping.on_nonfinite_loss)
    sync_check = HostSyncCheck() if recipe.extras.check_host_syncs else None
    callbacks = [
        *stopping_callbacks(recipe, args, budget, model, splits, eval_set),
        checkpointing,
        monitor,
        StopStepReport(),  # DDP: logs that every rank stopped on the same step
        *ema_callbacks(recipe.extras.ema_decay),
        guard,
        *([sync_check] if sync_check else []),  # last: it reads the step's final control flags
    ]
    trainer = make_trainer(
        model,
        args,
        prep,
        train_dataset=train_set,
        eval_dataset=eval_set,
        callbacks=callbacks,
        **run_options(recipe, prep, model, len(splits.label_names), args.label_smoothing_factor),
        budget=budget,
        lr_shape=lr_shape_from_args(args) if budget else None,
        monitor=monitor,
        channels_last=channels_last,
    )
    if args.torch_compile:
        plan_compilation(trainer.resolution, args)
    use_budget_progress_bar(trainer, budget)
    if budget is not None:
        calibrate_reserve(trainer, eval_set)
    log_plan(recipe, args, trainer, splits, prep, budget, checkpoint)
    if save_every:
        logger.info("checkpoints: also every %s of wall time (budget.save_every)", format_duration(save_every))
    with GracefulStop() as stop:
        checkpointing.stop_requested = stop.requested
        try:
            train_guarded(trainer, guard, checkpoint)  # NaN: exit 4, checkpoint kept
        finally:
            if sync_check is not None:
                sync_check.close()
    if checkpointing.interrupted:
        return report_interrupted(trainer, args)
    return finish(trainer, args, monitor)


def use_channels_last(model, device) -> bool:
    """A conv stem on a GPU: its weights in channels_last (NHWC) memory format, and VitTrainer hands it NHWC
    batches. cuDNN's NHWC kernels use the tensor cores without the NCHW<->NHWC transposes around each
    convolution that NCHW costs in bf16/fp16; a patch-stem ViT has one convolution, and is left as it is."""
    if device.type != "cuda" or getattr(model.config, "stem", "patch") != "conv":
        return False
    model.to(memory_format=torch.channels_last)
    return True


def plan_compilation(resolution, args) -> int:
    """training.torch_compile: a known, small number of compiled graphs; returns it (and logs it).

    torch.compile makes a graph per input shape. By default, at the second shape dynamo compiles one
    dynamic-shape graph instead, whose generic kernels run slower than kernels specialized to fixed sizes,
    and past `recompile_limit` (8) graphs it silently falls back to eager. So: static graphs only, for
    the planned shapes: each training size (data.progressive_sizes) at the full batch and at an epoch's
    smaller last batch, and the evaluation's (full and last batch)."""
    import torch._dynamo

    sizes = resolution.sizes if resolution is not None else (None,)
    graphs = len(sizes) * (1 if args.dataloader_drop_last else 2) + 2
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, graphs + 2)
    shown = ", ".join(f"{size}px" for size in sizes) if resolution is not None else "one size"
    logger.info("torch_compile: %d graphs planned, each compiled once: training (%s; an epoch's last, smaller "
                "batch has its own) and evaluation (its last batch too)", graphs, shown)
    return graphs


def make_budget(recipe: Recipe, started_at: float, clock, checkpoint: str | None) -> TimeBudget | None:
    """The run's TimeBudget, continuing the clock of the checkpoint it resumes."""
    if recipe.budget.time is None:
        return None
    budget = TimeBudget(recipe.budget.time, started_at=started_at, clock=clock)
    saved = read_budget_state(checkpoint)
    if saved:
        budget.restore(saved)
        logger.info("budget: %s already spent by the run this one resumes", format_duration(budget.spent_before))
    return budget


def stopping_callbacks(recipe: Recipe, args, budget, model, splits, eval_set) -> list:
    """Early stopping and the budget: whichever comes first ends training, then the same final steps."""
    from transformers import EarlyStoppingCallback

    callbacks = []
    if recipe.early_stopping.patience is not None:
        callbacks.append(EarlyStoppingCallback(recipe.early_stopping.patience, recipe.early_stopping.threshold))
    if budget is not None:
        callbacks.append(budget_callback(budget, args, splits.eval_images, model, splits.train))
    return callbacks


def run_options(recipe: Recipe, prep: Preprocessing, model, num_labels: int, label_smoothing: float) -> dict[str, Any]:
    """VitTrainer's per-run options from the recipe: augmentation, mixing, progressive resizing, extras.
    One builder for a run and for each search trial, so the two cannot drift apart."""
    from .data.augment import build_train_augment
    from .data.mixing import build_mixing
    from .data.resolution import build_resolution_schedule

    return {
        "train_augment": build_train_augment(recipe.data, prep.mean, prep.std),
        "mixing": build_mixing(recipe.data, num_labels, label_smoothing),
        "resolution": build_resolution_schedule(
            recipe.data.progressive_start_size, recipe.data.progressive_ramp, prep.image_size,
            getattr(model.config, "patch_size", 1), recipe.data.progressive_sizes,
        ),
        "layer_decay": recipe.extras.layer_decay,
        "eval_flip_tta": recipe.extras.eval_flip_tta,
    }


def make_trainer(model, args, prep: Preprocessing, trainer_class=None, **kwargs):
    """A VitTrainer (or `trainer_class`, a subclass) with vit_hf's data collator, metrics and image
    processor; shared with evaluation and the hyperparameter search."""
    from .data.augment import build_eval_transform
    from .data.decode import image_processor_for
    from .data.loaders import batch_collator
    from .metrics import compute_metrics, top_k_predictions
    from .trainer import VitTrainer

    kwargs.setdefault("data_collator", batch_collator)
    return (trainer_class or VitTrainer)(
        model=model,
        args=args,
        processing_class=image_processor_for(prep.image_size, prep.crop_pct, prep.mean, prep.std),
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=top_k_predictions,
        eval_transform=build_eval_transform(prep.mean, prep.std),
        **kwargs,
    )


def training_values(recipe: Recipe) -> dict[str, Any]:
    """TrainingArguments kwargs, with the loop length left to the budget when only a budget limits it."""
    values = dict(recipe.training)
    if recipe.budget.time is None:
        return values
    kind = str(values.get("lr_scheduler_type", "linear"))
    if kind not in SUPPORTED_SCHEDULES:
        raise RecipeError(
            f"training.lr_scheduler_type: {kind!r} cannot follow a time budget; use one of "
            f"{', '.join(SUPPORTED_SCHEDULES)}"
        )
    limited = int(values.get("max_steps", -1) or -1) > 0 or "num_train_epochs" in values
    if not limited:
        if recipe.data.streaming:
            values["max_steps"] = UNLIMITED_STEPS
        else:
            values["num_train_epochs"] = UNLIMITED_EPOCHS
    return values


def with_loader_settings(args, settings, training: dict[str, Any] | None = None):
    """A copy of `args` (TrainingArguments) with the DataLoader settings the data store needs
    (data.loaders.LoaderSettings): workers, pinning, persistence, prefetch, and accelerate's non_blocking
    and dispatch_batches. The recipe's own accelerator_config values win; one given as a JSON file is kept."""
    asked = (training or {}).get("accelerator_config")
    accelerator = args.accelerator_config
    if not isinstance(asked, str):
        ours = {"non_blocking": settings.non_blocking}
        if settings.dispatch_batches is not None:
            ours["dispatch_batches"] = settings.dispatch_batches
        accelerator = dataclasses.replace(accelerator, **{k: v for k, v in ours.items() if k not in (asked or {})})
    return dataclasses.replace(
        args,
        dataloader_num_workers=settings.num_workers,
        dataloader_pin_memory=settings.pin_memory,
        dataloader_persistent_workers=settings.persistent_workers,
        dataloader_prefetch_factor=settings.prefetch_factor,
        accelerator_config=accelerator,
    )


def resolve_preprocessing(recipe: Recipe) -> Preprocessing:
    """Resolution and normalization: the recipe's, else the pretrained model's, else the defaults."""
    from .models import DEFAULT_IMAGE_SIZE

    pretrained = pretrained_preprocessing(recipe.model.pretrained) if recipe.model.pretrained else {}
    data = recipe.data
    return Preprocessing(
        image_size=data.image_size or pretrained.get("image_size") or DEFAULT_IMAGE_SIZE,
        crop_pct=data.crop_pct,
        mean=list(data.mean or pretrained.get("mean") or IMAGENET_MEAN),
        std=list(data.std or pretrained.get("std") or IMAGENET_STD),
    )


def pretrained_preprocessing(name: str) -> dict[str, Any]:
    """image_size/mean/std from a checkpoint's image processor (or its config when it has none)."""
    from transformers import AutoConfig, AutoImageProcessor

    found: dict[str, Any] = {}
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        processor = None
    if processor is not None:
        found["mean"] = getattr(processor, "image_mean", None)
        found["std"] = getattr(processor, "image_std", None)
        crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        size = crop or getattr(processor, "size", None) or {}
        found["image_size"] = size.get("height") or size.get("shortest_edge")
    if not found.get("image_size"):
        found["image_size"] = getattr(AutoConfig.from_pretrained(name), "image_size", None)
    return found


# The eval images a budget reserves time for when a stream does not say how many it holds.
UNKNOWN_EVAL_IMAGES = 10_000


def budget_callback(budget: TimeBudget, args, eval_images: int | None, model, train_set) -> BudgetCallback:
    if eval_images is None:
        logger.warning(
            "budget: the eval stream's length is unknown; time for %d images is kept for the final evaluation. "
            "data.max_eval_samples sets it (and bounds the evaluation)", UNKNOWN_EVAL_IMAGES,
        )
        eval_images = UNKNOWN_EVAL_IMAGES
    images_per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    reserve = ReserveEstimate(
        eval_images=eval_images,
        budget_seconds=budget.seconds,
        model_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        loader_workers=args.dataloader_num_workers,
        pushes=args.push_to_hub,
    )
    epoch_images = len(train_set) if hasattr(train_set, "__len__") else None
    return BudgetCallback(budget=budget, reserve=reserve, images_per_step=images_per_step, epoch_images=epoch_images,
                          compiles=args.torch_compile)


def calibrate_reserve(trainer, eval_set) -> None:
    """Time a few evaluation batches now, so the budget's reserve is right from the first step."""
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, BudgetCallback))
    per_image = measure_eval_seconds_per_image(trainer, eval_set)
    callback.reserve.eval_seconds_per_image = per_image
    logger.info(
        "budget: evaluation runs at %.0f images/s here; the final one (%d images) is kept in reserve",
        1 / per_image, callback.reserve.eval_images,
    )


def write_recipe(recipe: Recipe, args) -> None:
    """output_dir/recipe.yaml: the resolved recipe; `python -m vit_hf.run output_dir/recipe.yaml` reruns it."""
    if not args.should_save:
        return
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "recipe.yaml").write_text(recipe.to_yaml())


def log_plan(recipe: Recipe, args, trainer, splits, prep: Preprocessing, budget, checkpoint: str | None) -> None:
    """The derived numbers, up front (nanoGPT habit): what one step, one epoch and the budget mean."""
    from .models import count_parameters

    images_per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    n_train = len(splits.train) if hasattr(splits.train, "__len__") else None
    lines = [
        f"data: {recipe.data.dataset} | {len(splits.label_names)} classes | train "
        f"{n_train if n_train is not None else 'stream'} | eval "
        f"{len(splits.eval) if hasattr(splits.eval, '__len__') else 'stream'} | {prep.image_size}px",
        f"model: {type(trainer.model).__name__} {count_parameters(trainer.model) / 1e6:.2f}M parameters, "
        f"patch {getattr(trainer.model.config, 'patch_size', '?')}, attention "
        f"{trainer.model.config._attn_implementation}",
        f"augment: {trainer.train_augment!r}",
        f"mixing: {trainer.mixing!r}, resolution: {trainer.resolution!r}",
        f"step: {images_per_step} images ({args.per_device_train_batch_size} x {args.world_size} devices x "
        f"{args.gradient_accumulation_steps} accumulation), lr {args.learning_rate:g}, "
        f"{args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, 'value') else args.lr_scheduler_type}",
    ]
    if n_train:
        lines.append(f"epoch: {math.ceil(n_train / images_per_step)} steps")
    if budget is not None:
        lines.append(
            f"budget: {format_duration(budget.seconds)} for the whole run, {format_duration(budget.remaining())} "
            "left now; the learning rate anneals to the budget's end"
        )
    if checkpoint:
        lines.append(f"resume: from {checkpoint}")
    for line in lines:
        logger.info(line)


def report_interrupted(trainer, args) -> dict[str, float]:
    """After a SIGTERM/SIGINT: the checkpoint is written (and pushed, per hub_strategy); say how to go on."""
    from . import hub

    pushed = args.push_to_hub and args.hub_strategy != "end"  # HubStrategy is a str enum
    if pushed:
        hub.wait_for_background_pushes(trainer)
        pushed = not trainer.hub_pushes.failures
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
    from . import hub
    from .card import write_model_card
    from .plots import evaluation_breakdown, write_curves
    from .report import format_summary
    from .saving import guarded_final_save

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
    logger.info("\n%s", format_summary(metrics, trainer.state, monitor.timing, args.output_dir, trainer.budget))
    if args.push_to_hub:
        hub.push_at_end(trainer, trainer.budget)
    return metrics
