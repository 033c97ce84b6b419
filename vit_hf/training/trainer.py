"""VitTrainer: what the HF Trainer lacks for image training on a budget, one override per gap.

Public hooks where the Trainer has one; seven private methods where it has none (each named in
PRIVATE_HOOKS, which tests/unit/training/test_trainer_contract.py checks against the installed
transformers, so an upgrade that renames one fails loudly). docs/DESIGN.md has the Trainer-internals notes.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..augment.mixing import soft_target_cross_entropy
from ..data.gpu_decode import decode_on_device, to_device
from ..data.stream_resume import StreamPosition
from ..errors import RecipeError
from ..hub.card import write_model_card
from ..hub.push import HubPusher
from ..outputs.layout import write_budget_state, write_stream_position
from .batches import BatchPreparer, RunOptions
from .budget import TimeBudget
from .checkpoints import guarded_save
from .ema import WeightEma
from .monitor import RunMonitor
from .optim import decay_parameter_names, layer_decay_optimizer
from .schedule import LrShape, budget_lr_scheduler
from .stopping import NonFiniteGuard

logger = logging.getLogger(__name__)

# The private Trainer methods overridden here: no public hook does what each one does (the reasons are
# at each override). A transformers upgrade that drops or changes one of them must fail a test.
PRIVATE_HOOKS = (
    "_save_checkpoint",  # a failed save (disk full) leaves no partial checkpoint and ends with a clear error
    "_load_from_checkpoint",  # restores ViT weights under their converted names (the 5.24 restore bug)
    "_load_best_model",  # the same, for load_best_model_at_end
    "_load_optimizer_and_scheduler",  # an incompatible optimizer state is bad input; the EMA loads with it
    "_save_optimizer_and_scheduler",  # the EMA, the budget's clock, a stream's position go into each checkpoint
    "_get_grad_norm",  # the update's norm, before optimizer.step(): where a non-finite update is dropped
    "_push_from_checkpoint",  # a failed checkpoint push is recorded; live TensorBoard files wait for the end
)


class VitTrainer(Trainer):
    def __init__(
        self,
        *args,
        options: RunOptions | None = None,
        budget: TimeBudget | None = None,
        lr_shape: LrShape | None = None,
        monitor: RunMonitor | None = None,
        ema: WeightEma | None = None,
        guard: NonFiniteGuard | None = None,
        hub: HubPusher | None = None,
        stream_position: StreamPosition | None = None,
        **kwargs,
    ):
        # Set before the Trainer's __init__, which may already log (monitor) and create the Hub repository (hub).
        self.monitor = monitor
        self.hub = hub or HubPusher()
        super().__init__(*args, **kwargs)
        self.options = options or RunOptions()
        self.batches = BatchPreparer(self.options)
        self.budget, self.lr_shape = budget, lr_shape
        self.ema, self.guard = ema, guard  # also among the callbacks: they act on Trainer events too
        self.stream_position = stream_position  # a resumable training stream's, counted here, saved with checkpoints
        self._parameter_count: int | None = None  # for floating_point_ops

    # Batches: augmentation on the device (batches.py) ------------------------------------------------

    def training_step(self, model, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        return super().training_step(model, self.training_inputs(inputs), num_items_in_batch)

    def training_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """A loader's training batch as the model's inputs: augmented for this micro-batch, resized, mixed."""
        return self.batches.training(
            self._on_device(inputs, "train"), self.state.global_step, self.args.gradient_accumulation_steps,
            self.args.seed, self.args.process_index, self._training_progress(),
        )

    def evaluation_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """A loader's evaluation batch as the model's inputs: normalized."""
        return self.batches.evaluation(self._on_device(inputs, "eval"))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Normalized batches; with eval_flip_tta, the mean logits and loss of each image and its mirror."""
        inputs = self.evaluation_inputs(inputs)
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if not self.options.eval_flip_tta:
            return loss, logits, labels
        mirrored = {**inputs, "pixel_values": inputs["pixel_values"].flip(-1)}  # [B, C, H, W]: along W
        mirror_loss, mirror_logits, _ = super().prediction_step(model, mirrored, prediction_loss_only, ignore_keys)
        return _mean_of(loss, mirror_loss), _mean_of(logits, mirror_logits), labels

    def _on_device(self, inputs: dict[str, Any], split: str) -> dict[str, Any]:
        """The batch on the training device (accelerate's loader has put it there already; `to` is then a no-op);
        a batch of JPEG files (data.gpu_decode) decoded there, with the split's geometry."""
        device = self.args.device
        inputs = {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
                  for key, value in inputs.items()}
        if "encoded" not in inputs or self.options.gpu_decode is None:
            return inputs
        gpu = self.options.gpu_decode
        pixels, kept = decode_on_device(inputs["encoded"], gpu.train if split == "train" else gpu.eval, device,
                                        gpu.on_bad_image)
        labels = inputs["labels"]
        if len(kept) < len(inputs["encoded"]):
            # Bad files were left out, so their labels go too: by an index built on the host and copied from pinned
            # memory (a Python list as the index is copied from pageable memory, a host sync).
            labels = labels.index_select(0, to_device(torch.tensor(kept), labels.device))
        return {"pixel_values": pixels, "labels": labels}

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
        instead starts the next pass, which set_epoch reshuffles. A resumable stream's position counts the
        batches handed out (data/stream_resume.py)."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batches:
            self.control.should_epoch_stop = True
        if self.stream_position is not None:
            self.stream_position.advance(len(batches))
        return batches, num_items

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Training FLOPs of a micro-batch, for the Trainer's total_flos: 6 x parameters x tokens (Kaplan et al.
        2020), a ViT's tokens being its patches and the CLS token.

        The Trainer's own counts every pixel as a token, and walks the model's modules at every micro-batch
        to count its parameters again; here they are counted once."""
        patch = getattr(self.model.config, "patch_size", None)  # a model without patches (timm's wrapper, a CNN)
        shape = _batch_shape(inputs, self.options.image_size) if isinstance(patch, int) else None
        if shape is None:
            return super().floating_point_ops(inputs)
        if self._parameter_count is None:
            self._parameter_count = sum(p.numel() for p in self.model.parameters())
        images, height, width = shape
        tokens = (height // patch) * (width // patch) + 1
        return 6 * self._parameter_count * tokens * images

    # Optimizer and schedule ----------------------------------------------------------------------------

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """With a time budget the rate follows budget progress, not a step count guessed up front (budget.py)."""
        if self.budget is None or self.lr_shape is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        budget = self.budget
        self.lr_scheduler = budget_lr_scheduler(optimizer if optimizer is not None else self.optimizer,
                                                self.lr_shape, lambda: budget.progress, num_training_steps)
        self._created_lr_scheduler = True  # the Trainer's flag: this scheduler is its own (steps and saves it)
        return self.lr_scheduler

    def get_decay_parameter_names(self, model) -> list[str]:
        return decay_parameter_names(model, super().get_decay_parameter_names(model))

    def create_optimizer(self, model=None):
        if self.optimizer is not None or self.options.layer_decay is None:
            return super().create_optimizer(model)
        self.optimizer = layer_decay_optimizer(self, self.model if model is None else model, self.options.layer_decay)
        return self.optimizer

    def _get_grad_norm(self, model, grad_norm=None):
        # Called just before optimizer.step(), with the update's norm: a non-finite update is dropped there
        # (stopping.py). No callback sees the norm before the step.
        grad_norm = super()._get_grad_norm(model, grad_norm)
        if self.guard is not None:
            optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
            self.guard.check(grad_norm, optimizer, self.state.global_step + 1,
                             loss_scaled=self.accelerator.scaler is not None)
        return grad_norm

    # Checkpoints -----------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial) -> None:
        # A save that fails (disk full) removes its partial folder and ends the run naming the checkpoint that is
        # intact (checkpoints.py); no public hook wraps the save itself.
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        with guarded_save(folder, self.args.output_dir, what=folder.name):
            super()._save_checkpoint(model, trial)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        # Inside Trainer._save_checkpoint, after the model and before trainer_state.json marks the checkpoint
        # complete and before its Hub push: the EMA weights, and the budget's clock (a resumed run, local or
        # from the Hub, continues on the same deadline and LR curve). No callback runs at that point.
        super()._save_optimizer_and_scheduler(output_dir)
        if not self.args.should_save:
            return
        if self.ema is not None:
            self.ema.save(output_dir)
        if self.budget is not None:
            write_budget_state(output_dir, self.budget.state())
        if self.stream_position is not None:
            write_stream_position(output_dir, self.stream_position.to_dict())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # The optimizer state of a different model or optimizer setup is bad input (exit 2), not a traceback;
        # the weight EMA travels with the optimizer state.
        with _incompatible_checkpoint_is_bad_input(checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
        if self.ema is not None and checkpoint is not None:
            self.ema.load(checkpoint, device=self.args.device)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # transformers 5.24 restores ViT checkpoints into the live module with strict=False under saved key
        # names that differ from the live ones: the encoder would silently keep its current weights.
        with _incompatible_checkpoint_is_bad_input(resume_from_checkpoint):
            load_checkpoint_weights(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        # The same restore bug, for load_best_model_at_end.
        logger.info("loading the best model from %s (%s)", self.state.best_model_checkpoint, self.state.best_metric)
        load_checkpoint_weights(self.model, self.state.best_model_checkpoint)

    # The Hub (hub/push.py) and what the run is doing (monitor.py, hub/card.py) ---------------------------------

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        self.hub.start(self, token, private)  # a Hub it cannot reach does not stop training

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # The Trainer pushes checkpoints in background futures whose failures nobody reads, with TensorBoard's
        # event files still being written (hub/push.py).
        self.hub.push_checkpoint(self, checkpoint_folder)

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

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """With a weight EMA, evaluations (and so metric_for_best_model and early stopping) use its weights."""
        with self.ema.swapped_in(self.model) if self.ema is not None else contextlib.nullcontext():
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)


def _batch_shape(inputs: dict[str, Any], image_size: int | None) -> tuple[int, int, int] | None:
    """(images, height, width) of a micro-batch as the loader gave it; JPEG files (data.gpu_decode) are decoded at
    the run's image size (RunOptions.image_size: not every model's config has one); None when unknown."""
    pixels = inputs.get("pixel_values")
    if pixels is not None:
        return pixels.shape[0], pixels.shape[-2], pixels.shape[-1]
    if "encoded" in inputs and image_size is not None:
        return len(inputs["encoded"]), image_size, image_size
    return None


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
