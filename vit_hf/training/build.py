"""Building a run: its TrainingArguments, model placement, budget, callbacks (in one list) and trainer.

train.py tells the story; this module holds the pieces it assembles, shared with evaluation
(evaluate.py) and the search (vit_hf.search).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch._dynamo
from transformers import EarlyStoppingCallback, TrainerCallback

from ..augment.mixing import build_mixing
from ..augment.resolution import build_resolution_schedule
from ..augment.transform import build_eval_transform, build_train_augment
from ..data.decode import image_processor_for
from ..data.loaders import batch_collator
from ..hub.push import HubPusher
from ..modeling.families import check_progressive_resizing, record_preprocessing
from ..modeling.preprocessing import Preprocessing
from ..outputs.layout import read_budget_state
from ..recipe.durations import format_duration
from ..recipe.schema import Recipe
from .batches import RunOptions
from .budget import BudgetCallback, ReserveEstimate, TimeBudget, measure_eval_seconds_per_image
from .checkpoints import CheckpointCallback, resolve_save_every
from .distributed import StopStepReport
from .ema import WeightEma
from .metrics import EvaluationMetrics, top_k_predictions
from .monitor import RunMonitor, images_per_step, use_budget_progress_bar
from .schedule import lr_shape_from_args
from .steps import StepClock
from .stopping import GracefulStop, NonFiniteGuard
from .sync_check import HostSyncCheck
from .trainer import VitTrainer

logger = logging.getLogger(__name__)





# The eval images a budget reserves time for when a stream does not say how many it holds.
UNKNOWN_EVAL_IMAGES = 10_000


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


def run_options(recipe: Recipe, prep: Preprocessing, model, num_labels: int, label_smoothing: float,
                channels_last: bool = False) -> RunOptions:
    """VitTrainer's per-run options from the recipe: augmentation, mixing, progressive resizing, extras.
    One builder for a run and for each search trial, so the two cannot drift apart."""
    data = recipe.data
    resolution = build_resolution_schedule(data.progressive_start_size, data.progressive_ramp, prep.image_size,
                                           getattr(model.config, "patch_size", 1), data.progressive_sizes)
    if resolution is not None:
        check_progressive_resizing(model)
    return RunOptions(
        train_augment=build_train_augment(data, prep.mean, prep.std),
        eval_transform=build_eval_transform(prep.mean, prep.std),
        mixing=build_mixing(data, num_labels, label_smoothing),
        resolution=resolution,
        layer_decay=recipe.extras.layer_decay,
        eval_flip_tta=recipe.extras.eval_flip_tta,
        channels_last=channels_last,
    )


def make_trainer(model, args, prep: Preprocessing, metrics: EvaluationMetrics, options: RunOptions | None = None,
                 **kwargs) -> VitTrainer:
    """A VitTrainer with vit_hf's data collator, the run's metrics (training.metrics.load_metrics) and image
    processor; shared with evaluation and the search. `options` default to evaluation's: normalization only."""
    kwargs.setdefault("data_collator", batch_collator)
    record_preprocessing(model, prep)  # the processor saved beside the model is this one; timm's is in its config
    return VitTrainer(
        model=model,
        args=args,
        processing_class=image_processor_for(prep.image_size, prep.crop_pct, prep.mean, prep.std),
        compute_metrics=metrics,
        preprocess_logits_for_metrics=top_k_predictions,
        options=options or RunOptions(eval_transform=build_eval_transform(prep.mean, prep.std)),
        **kwargs,
    )


@dataclass
class Run:
    """One training run, assembled: the trainer and the callbacks train() and finish() talk to."""

    trainer: VitTrainer
    monitor: RunMonitor
    checkpointing: CheckpointCallback
    guard: NonFiniteGuard
    signals: GracefulStop
    sync_check: HostSyncCheck | None
    save_every: float | None


def build_run(recipe: Recipe, args, model, splits, data, prep: Preprocessing, metrics: EvaluationMetrics,
              budget: TimeBudget | None, started_at: float, clock=time.monotonic) -> Run:
    """The trainer and its callbacks, all in one list; the budget's reserve timed before the first step."""
    save_every = resolve_save_every(recipe.budget.save_every, recipe.budget.time)
    signals = GracefulStop()
    steps = StepClock(clock)
    monitor = RunMonitor(budget=budget, started_at=started_at, clock=clock, loader=data.choice.kind, steps=steps)
    checkpointing = CheckpointCallback(save_every=save_every, stop_requested=signals.requested, clock=clock)
    guard = NonFiniteGuard(recipe.early_stopping.on_nonfinite_loss)
    ema = WeightEma(recipe.extras.ema_decay) if recipe.extras.ema_decay is not None else None
    sync_check = HostSyncCheck() if recipe.extras.check_host_syncs else None
    budgeting = budget_callback(budget, args, splits.eval_images, model, splits.train, steps) if budget else None
    callbacks: list[TrainerCallback | None] = [
        steps,  # first: every callback after it reads the step that just ended
        early_stopping(recipe),
        budgeting,
        checkpointing,
        monitor,
        StopStepReport() if args.world_size > 1 else None,  # DDP: logs that every rank stopped on the same step
        ema,
        guard,
        sync_check,  # last: it reads the step's final control flags
    ]
    channels_last = use_channels_last(model, args.device)
    options = run_options(recipe, prep, model, len(splits.label_names), args.label_smoothing_factor, channels_last)
    trainer = make_trainer(
        model, args, prep, metrics, options,
        train_dataset=data.train, eval_dataset=data.eval, callbacks=[c for c in callbacks if c is not None],
        budget=budget, lr_shape=lr_shape_from_args(args) if budget else None, monitor=monitor, ema=ema, guard=guard,
        hub=HubPusher(),
    )
    use_budget_progress_bar(trainer, budget)
    if args.torch_compile:
        plan_compilation(trainer.options.resolution, args)
    if budgeting is not None:
        calibrate_reserve(trainer, budgeting, data.eval)
    return Run(trainer, monitor, checkpointing, guard, signals, sync_check, save_every)


def early_stopping(recipe: Recipe) -> EarlyStoppingCallback | None:
    """early_stopping.patience -> the Trainer's EarlyStoppingCallback; whichever of it and the budget comes
    first ends training, then the same final steps."""
    if recipe.early_stopping.patience is None:
        return None
    return EarlyStoppingCallback(recipe.early_stopping.patience, recipe.early_stopping.threshold)


def budget_callback(budget: TimeBudget, args, eval_images: int | None, model, train_set,
                    steps: StepClock | None = None) -> BudgetCallback:
    """The budget's callback, with what it needs to estimate the final evaluation and save."""
    if eval_images is None:
        logger.warning(
            "budget: the eval stream's length is unknown; time for %d images is kept for the final evaluation. "
            "data.max_eval_samples sets it (and bounds the evaluation)", UNKNOWN_EVAL_IMAGES,
        )
        eval_images = UNKNOWN_EVAL_IMAGES
    reserve = ReserveEstimate(
        eval_images=eval_images,
        budget_seconds=budget.seconds,
        model_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        loader_workers=args.dataloader_num_workers,
        pushes=args.push_to_hub,
    )
    epoch_images = len(train_set) if hasattr(train_set, "__len__") else None
    return BudgetCallback(budget=budget, reserve=reserve, images_per_step=images_per_step(args),
                          epoch_images=epoch_images, compiles=args.torch_compile, steps=steps)


def calibrate_reserve(trainer, callback: BudgetCallback, eval_set) -> None:
    """Time a few evaluation batches now, so the budget's reserve is right from the first step."""
    per_image = measure_eval_seconds_per_image(trainer, eval_set)
    callback.reserve.eval_seconds_per_image = per_image
    logger.info(
        "budget: evaluation runs at %.0f images/s here; the final one (%d images) is kept in reserve",
        1 / per_image, callback.reserve.eval_images,
    )
