"""The Trainer subclass: what the HF Trainer lacks for image training on a budget.

Three gaps, each filled here and nowhere else:
1. Images arrive as uint8 batches; augmentation and normalization run batched on the device
   (`_prepare_inputs`), so data-loader workers only decode.
2. With a time budget, the learning-rate schedule is a function of budget progress, not of a step
   count guessed up front (`create_scheduler`; see budget.py for why).
3. transformers 5.24 restores ViT checkpoints into the live module with strict=False, and the
   saved key names (`vit.encoder.layer.0.attention.attention.query`) differ from the live ones
   (`vit.layers.0.attention.q_proj`): resume_from_checkpoint and load_best_model_at_end silently
   keep the encoder's current weights. `from_pretrained` applies the key conversion, so both paths
   here load through it and copy the result strictly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .budget import LrShape, TimeBudget
from .checkpoints import write_budget_state

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
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.train_augment = train_augment
        self.eval_transform = eval_transform
        self.budget = budget
        self.lr_shape = lr_shape
        self._augment_generator: torch.Generator | None = None

    # 1. Device-side augmentation -----------------------------------------------------------------

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        inputs = super()._prepare_inputs(inputs)
        pixels = inputs.get("pixel_values")
        if pixels is None or pixels.dtype != torch.uint8:
            return inputs
        if self.model.training and self.train_augment is not None:
            pixels = self.train_augment(pixels, self._generator_for_step(pixels.device))
        elif self.eval_transform is not None:
            pixels = self.eval_transform(pixels)
        return {**inputs, "pixel_values": pixels}

    def _generator_for_step(self, device: torch.device) -> torch.Generator:
        """A generator seeded by (seed, step, rank): augmentation is reproducible and resumes exactly."""
        if self._augment_generator is None or self._augment_generator.device != device:
            self._augment_generator = torch.Generator(device=device)
        step = self.state.global_step * self.args.gradient_accumulation_steps
        seed = (self.args.seed * 1_000_003 + step) * 64 + self.args.process_index
        return self._augment_generator.manual_seed(seed % (2**63))

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
        # The budget's clock goes into the checkpoint before the Trainer writes (and pushes) it, so
        # a resumed run, local or from the Hub, continues on the same deadline and LR curve.
        if self.budget is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            write_budget_state(folder, self.budget.state())
        super()._save_checkpoint(model, trial)

    # 3. Correct checkpoint restores -----------------------------------------------------------------

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_checkpoint_weights(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        logger.info("loading the best model from %s (%s)", self.state.best_model_checkpoint, self.state.best_metric)
        load_checkpoint_weights(self.model, self.state.best_model_checkpoint)


def load_checkpoint_weights(model: torch.nn.Module, checkpoint: str) -> None:
    """Copy the weights of `checkpoint` into `model`, strictly, through from_pretrained's key conversion."""
    model = getattr(model, "module", model)  # DDP-wrapped or not
    reloaded = type(model).from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    model.load_state_dict(reloaded.state_dict(), strict=True)
