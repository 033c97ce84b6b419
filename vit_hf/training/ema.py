"""Weight EMA: a moving average of the model's weights, evaluated and saved in their place.

Details: docs/DESIGN.md, "Weight EMA".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

EMA_FILE = "ema.safetensors"


class WeightEma(TrainerCallback):
    def __init__(self, decay: float):
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] | None = None  # the average, keyed as model.state_dict()
        self.updates = 0
        self.applied = False  # True once the live model holds the EMA weights (after training)
        self._pairs = None  # see _pair_up

    def __repr__(self) -> str:
        return f"WeightEma(decay={self.decay}, updates={self.updates})"

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    # TrainerCallback events ------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.shadow is None:  # not restored from a checkpoint: start from the weights as they are
            self.shadow = {name: _fp32_copy(value) for name, value in model.state_dict().items()}
        self.applied = False
        self._pairs = None  # paired up again at the first step, with the model that trains

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        """After each optimizer step (not each accumulation micro-step)."""
        if self._pairs is None:
            self._pairs = self._pair_up(model)
        averaged, live, counters = self._pairs
        for shadow, value in counters:  # BatchNorm's num_batches_tracked: a counter, not a weight
            shadow.copy_(value)
        fp32 = [value if value.dtype == torch.float32 else value.float() for value in live]
        torch._foreach_lerp_(averaged, fp32, 1.0 - self.current_decay())  # one fused kernel per device (ModelEmaV3)
        self.updates += 1

    def _pair_up(self, model) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """(shadow weights, the live tensors they average, counters copied as they are), made once: the live
        state_dict tensors share the parameters' storage, so they stay current; calling state_dict() at every
        step costs more than the average itself."""
        averaged, live, counters = [], [], []
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                averaged.append(self.shadow[name])
                live.append(value)
            else:
                counters.append((self.shadow[name], value))
        return averaged, live, counters

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.shadow is None:
            return
        if args.load_best_model_at_end and state.best_model_checkpoint:
            # The live weights are the best checkpoint's (Trainer._load_best_model); evaluations ranked
            # its EMA weights, so those are the final model.
            self.load(state.best_model_checkpoint, device=_device_of(model))
        self.copy_to(model)
        self.applied = True

    # Weights in and out --------------------------------------------------------------------------------

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)  # copies in place, cast to the live dtypes

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[None]:
        """The EMA weights in `model` inside the block, the live ones again after it."""
        if self.shadow is None or self.applied:
            yield
            return
        live = {name: value.clone() for name, value in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield
        finally:
            model.load_state_dict(live, strict=True)

    # Checkpoints --------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        # contiguous(): safetensors stores dense row-major tensors, and a conv stem trains in channels_last.
        shadow = {name: value.contiguous() for name, value in self.shadow.items()}
        save_file(shadow, str(Path(folder) / EMA_FILE), metadata={"updates": str(self.updates)})

    def load(self, folder: str | Path, device: torch.device | str) -> bool:
        """Restore the average from a checkpoint; False (and the average starts afresh) when it has none."""
        path = Path(folder) / EMA_FILE
        if not path.is_file():
            logger.warning("%s has no %s: the weight EMA starts again from the resumed weights", folder, EMA_FILE)
            return False
        with safe_open(str(path), framework="pt", device=str(device)) as file:
            self.shadow = {name: file.get_tensor(name) for name in file.keys()}
            self.updates = int(file.metadata()["updates"])
        self._pairs = None
        return True


def _fp32_copy(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    return value.float().clone() if value.is_floating_point() else value.clone()


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
