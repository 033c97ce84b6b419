"""The Trainer subclass: what the HF Trainer lacks for image training on a budget.

The gaps, each filled here and nowhere else:
1. Images arrive as uint8 batches; augmentation and normalization run batched on the device
   (`_prepare_inputs`), so data-loader workers only decode. Mixup/CutMix make soft targets there, and
   `compute_loss` takes the soft-target cross-entropy for them.
2. With a time budget, the learning-rate schedule is a function of budget progress, not of a step
   count guessed up front (`create_scheduler`; see budget.py for why).
3. transformers 5.24 restores ViT checkpoints into the live module with strict=False, and the
   saved key names (`vit.encoder.layer.0.attention.attention.query`) differ from the live ones
   (`vit.layers.0.attention.q_proj`): resume_from_checkpoint and load_best_model_at_end silently
   keep the encoder's current weights. `from_pretrained` applies the key conversion, so both paths
   here load through it and copy the result strictly.
4. A NaN or infinite update never reaches the weights (`_get_grad_norm`, guards.py).
5. A failed save or Hub push never costs the run: `_save_checkpoint` (saving.py), `init_hf_repo`
   and `_push_from_checkpoint` (hub.py).
6. The logs carry images/s, data wait and the budget (`log`, callbacks.py); the model card pushed
   with the model is vit_hf's (`create_model_card`, card.py).
7. The recipe's `extras:` and timm's weight-decay rule: a weight EMA that evaluations use and
   checkpoints keep (ema.py), flip test-time augmentation (`prediction_step`), no weight decay on
   position embeddings and CLS token, and layer-wise learning-rate decay (optim.py).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import hub
from .budget import LrShape, TimeBudget
from .callbacks import RunMonitor
from .card import write_model_card
from .checkpoints import write_budget_state
from .data.mixing import Mixing, soft_target_cross_entropy
from .data.resolution import ResolutionSchedule, resize_batch
from .ema import weight_ema_of
from .errors import RecipeError
from .guards import nonfinite_guard_of
from .optim import decay_parameter_names, layer_decay_optimizer
from .saving import guarded_save

logger = logging.getLogger(__name__)

BatchTransform = Callable[..., torch.Tensor]


class VitTrainer(Trainer):
    def __init__(
        self,
        *args,
        train_augment: BatchTransform | None = None,
        eval_transform: BatchTransform | None = None,
        budget: TimeBudget | None = None,
        lr_shape: LrShape | None = None,
        mixing: Mixing | None = None,
        resolution: ResolutionSchedule | None = None,
        monitor: RunMonitor | None = None,
        layer_decay: float | None = None,
        eval_flip_tta: bool = False,
        channels_last: bool = False,
        **kwargs,
    ):
        self.monitor = monitor  # read by log(), which the Trainer's __init__ may already call
        super().__init__(*args, **kwargs)
        self.train_augment = train_augment
        self.mixing = mixing  # Mixup/CutMix of the augmented training batches: soft-target labels
        self.resolution = resolution  # progressive resizing of the training batches
        self.eval_transform = eval_transform
        self.budget = budget
        self.lr_shape = lr_shape
        self.layer_decay = layer_decay  # layer-wise learning-rate decay (optim.py); None = off
        self.eval_flip_tta = eval_flip_tta  # evaluate on the mean logits of each image and its mirror
        # Batches in NHWC, for a model whose convolutions are (see train.use_channels_last).
        self.channels_last = channels_last
        self._augment_generator: torch.Generator | None = None
        self._augmented_step, self._micro_batch = -1, 0  # the micro-batch being augmented within its step
        self._parameter_count: int | None = None  # for floating_point_ops

    # 1. Device-side augmentation -----------------------------------------------------------------

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        inputs = super()._prepare_inputs(inputs)
        pixels = inputs.get("pixel_values")
        if pixels is None or pixels.dtype != torch.uint8:
            return inputs
        if self.model.training and self.train_augment is not None:
            seed = self._next_augment_seed()
            pixels = self.train_augment(pixels, self._device_generator(pixels.device).manual_seed(seed))
            inputs = self._at_training_resolution(inputs, pixels)
            pixels = inputs["pixel_values"]
            if self.mixing is not None:
                # Mixing draws its per-batch numbers on the host, from the same seed: no read from the device.
                pixels, soft_targets = self.mixing(pixels, inputs["labels"], np.random.default_rng(seed))
                inputs = {**inputs, "labels": soft_targets}
        elif self.eval_transform is not None:
            pixels = self.eval_transform(pixels)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return {**inputs, "pixel_values": pixels}

    def _device_generator(self, device: torch.device) -> torch.Generator:
        if self._augment_generator is None or self._augment_generator.device != device:
            self._augment_generator = torch.Generator(device=device)
        return self._augment_generator

    def _next_augment_seed(self) -> int:
        """A seed per (seed, micro-batch, rank): every micro-batch of an accumulated step is augmented
        differently, the same run is augmented the same way, and a resumed run replays it from its step."""
        step = self.state.global_step
        self._micro_batch = self._micro_batch + 1 if step == self._augmented_step else 0
        self._augmented_step = step
        micro_batch = step * self.args.gradient_accumulation_steps + self._micro_batch
        return ((self.args.seed * 1_000_003 + micro_batch) * 64 + self.args.process_index) % (2**63)

    def _at_training_resolution(self, inputs: dict[str, Any], pixels: torch.Tensor) -> dict[str, Any]:
        """Progressive resizing: the batch at the schedule's size; the ViT interpolates its position
        embeddings while the size is below the checkpoint's (resolution.py)."""
        if self.resolution is None:
            return {**inputs, "pixel_values": pixels}
        size = self.resolution.size_at(self._training_progress())
        if size == pixels.shape[-1]:
            return {**inputs, "pixel_values": pixels}
        return {**inputs, "pixel_values": resize_batch(pixels, size), "interpolate_pos_encoding": True}

    def _training_progress(self) -> float:
        if self.budget is not None:
            return self.budget.progress
        return self.state.global_step / max(1, self.state.max_steps)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Soft targets [B, C] (from mixing, already smoothed): soft-target cross-entropy.

        Hard labels (evaluation, or no mixing): the Trainer's loss, label smoother included.
        """
        labels = inputs.get("labels")
        if labels is None or not labels.is_floating_point() or labels.dim() != 2:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Kept from the model, whose loss would read float labels as multi-label (BCE) and set
        # config.problem_type for good; and from the Trainer's label smoother, or smoothing would apply twice.
        outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
        loss = soft_target_cross_entropy(outputs.logits, labels, num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # As Trainer.compute_loss: the count covers every rank's samples, and DDP averages gradients over ranks.
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The Trainer's, and the end of an epoch when a stream has no batch left.

        For a stream (no length) the Trainer sizes an "epoch" at max_steps update steps; when the stream
        ends first it keeps asking the spent iterator for every remaining step (with a budget, up to a
        billion empty asks, during which no callback runs, so no budget can stop it). Ending the epoch
        instead starts the next pass, which set_epoch reshuffles."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batches:
            self.control.should_epoch_stop = True
        return batches, num_items

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Training FLOPs of a micro-batch, for the Trainer's total_flos: 6 x parameters x tokens (Kaplan et al.
        2020), a ViT's tokens being its patches and the CLS token.

        The Trainer's own counts every pixel as a token, and walks the model's modules at every micro-batch
        to count its parameters again; here they are counted once."""
        pixels = inputs.get("pixel_values")
        patch = getattr(self.model.config, "patch_size", None)
        if pixels is None or not isinstance(patch, int):
            return super().floating_point_ops(inputs)
        if self._parameter_count is None:
            self._parameter_count = sum(p.numel() for p in self.model.parameters())
        tokens = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch) + 1
        return 6 * self._parameter_count * tokens * pixels.shape[0]

    # 2. Budget-driven learning rate ----------------------------------------------------------------

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.budget is None or self.lr_shape is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        self.lr_scheduler = LambdaLR(optimizer, self._budget_lr_factor(num_training_steps))
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _budget_lr_factor(self, num_training_steps: int) -> Callable[[int], float]:
        budget, shape = self.budget, self.lr_shape

        def factor(step: int) -> float:
            # budget.progress is set (and agreed across ranks) by BudgetCallback at each step's end.
            return shape.factor(max(budget.progress, step / max(1, num_training_steps)), step)

        return factor

    def _save_checkpoint(self, model, trial) -> None:
        # A save that fails (disk full) removes its partial folder and ends the run naming the
        # checkpoint that is intact (saving.py).
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        with guarded_save(folder, self.args.output_dir, what=folder.name):
            # The budget's clock goes into the checkpoint before the Trainer writes (and pushes) it, so
            # a resumed run, local or from the Hub, continues on the same deadline and LR curve.
            if self.budget is not None and self.args.should_save:
                write_budget_state(folder, self.budget.state())
            super()._save_checkpoint(model, trial)

    # 3. Correct checkpoint restores -----------------------------------------------------------------

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        with _incompatible_checkpoint_is_bad_input(resume_from_checkpoint):
            load_checkpoint_weights(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        logger.info("loading the best model from %s (%s)", self.state.best_model_checkpoint, self.state.best_metric)
        load_checkpoint_weights(self.model, self.state.best_model_checkpoint)

    # 4. Bad updates never reach the weights (guards.py) ------------------------------------------------

    def _get_grad_norm(self, model, grad_norm=None):
        # Called just before optimizer.step(): a non-finite update is dropped there (guards.py).
        grad_norm = super()._get_grad_norm(model, grad_norm)
        guard = nonfinite_guard_of(self)
        if guard is not None:
            optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
            guard.check(grad_norm, optimizer, self.state.global_step + 1, loss_scaled=self.accelerator.scaler is not None)
        return grad_norm

    # 5. Hub failures do not cost the run (hub.py) -----------------------------------------------------

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        hub.start(self, token, private)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        hub.push_checkpoint(self, checkpoint_folder, super()._push_from_checkpoint)

    # 6. What the run is doing (callbacks.py, card.py) --------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # RunMonitor's keys go in before Trainer.log: it copies `logs` into log_history, then runs the
        # reporting integrations (TensorBoard, trackio, W&B) before any user callback's on_log.
        if self.monitor is not None:
            logs.update(self.monitor.log_metrics(logs, self.state))
        super().log(logs, start_time)

    def create_model_card(self, *args, **kwargs) -> None:
        # push_to_hub writes a card into output_dir just before uploading; ours knows the recipe, budget, hardware.
        if self.is_world_process_zero():
            write_model_card(self.args.output_dir, model_id=self.hub_model_id)

    # 7. extras: weight EMA, flip TTA, weight decay and layer-wise learning rates -----------------------

    def get_decay_parameter_names(self, model) -> list[str]:
        return decay_parameter_names(model, super().get_decay_parameter_names(model))

    def create_optimizer(self, model=None):
        if self.optimizer is not None or self.layer_decay is None:
            return super().create_optimizer(model)
        self.optimizer = layer_decay_optimizer(self, self.model if model is None else model, self.layer_decay)
        return self.optimizer

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        ema = weight_ema_of(self)
        with ema.swapped_in(self.model) if ema is not None else contextlib.nullcontext():
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """With eval_flip_tta: the mean logits, and the mean loss, of each image and its mirror."""
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if not self.eval_flip_tta:
            return loss, logits, labels
        mirrored = {**inputs, "pixel_values": inputs["pixel_values"].flip(-1)}  # [B, C, H, W]: along W
        mirror_loss, mirror_logits, _ = super().prediction_step(model, mirrored, prediction_loss_only, ignore_keys)
        return _mean_of(loss, mirror_loss), _mean_of(logits, mirror_logits), labels

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        # With the optimizer state: inside the checkpoint before trainer_state.json marks it complete,
        # and before the Hub push (Trainer._save_checkpoint's order).
        super()._save_optimizer_and_scheduler(output_dir)
        ema = weight_ema_of(self)
        if ema is not None and self.args.should_save:
            ema.save(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # The optimizer state of a different model or optimizer setup is bad input (exit 2), not a traceback;
        # the weight EMA travels with the optimizer state.
        with _incompatible_checkpoint_is_bad_input(checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
        ema = weight_ema_of(self)
        if ema is not None and checkpoint is not None:
            ema.load(checkpoint, device=self.args.device)


def _mean_of(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None else (a + b) / 2


@contextlib.contextmanager
def _incompatible_checkpoint_is_bad_input(checkpoint: str | None):
    """A checkpoint of another model or optimizer setup (the recipe changed since it was written)."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError) as exc:
        raise RecipeError(
            f"cannot resume from {checkpoint}: it was written by a different model or optimizer setup "
            f"({str(exc).splitlines()[0][:200]}). Use --resume never (a fresh run), another "
            "training.output_dir, or the recipe that wrote it"
        ) from None


def load_checkpoint_weights(model: torch.nn.Module, checkpoint: str) -> None:
    """Copy the weights of `checkpoint` into `model`, strictly, through from_pretrained's key conversion."""
    model = getattr(model, "module", model)  # DDP-wrapped or not
    reloaded = type(model).from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    model.load_state_dict(reloaded.state_dict(), strict=True)
