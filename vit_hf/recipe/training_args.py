"""The one TrainingArguments builder, and the `training:` section's checks against TrainingArguments itself.

`training:` is transformers.TrainingArguments verbatim, so HF's documentation applies; vit_hf changes a
few defaults for images (TRAINING_DEFAULTS) and decides what only the machine can say (report_to,
loader workers, tf32, use_cpu, CPU bf16). Those machine-dependent values are applied here, never
written into recipe.yaml, so the resolved recipe reruns the same elsewhere.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.util
import logging
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from ..errors import RecipeError
from .schema import SECRET_TRAINING_KEYS, Recipe
from .validate import check_keys, check_type

logger = logging.getLogger(__name__)

# Where HF's TrainingArguments defaults do not fit image training. Each is overridable.
TRAINING_DEFAULTS: dict[str, Any] = {
    # The image column must reach the transform: Trainer would drop it (docs/DESIGN.md).
    "remove_unused_columns": False,
    # A training tool evaluates and keeps checkpoints; HF's defaults evaluate never and save every 500 steps.
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    # HF logs every 500 steps, which is never in a 10-minute run.
    "logging_steps": 50,
    # The Trainer's filter tests every micro-batch's loss for NaN on the host: a GPU sync per micro-batch.
    # vit_hf's own guard (guards.py) keeps non-finite updates out of the weights without one.
    "logging_nan_inf_filter": False,
    # Every ViT parameter takes part in every step: DDP's search for unused ones is an extra autograd pass.
    "ddp_find_unused_parameters": False,
    # A pushed model is private until the recipe says otherwise (HF's None means public).
    "hub_private_repo": True,
}


def default_report_to() -> str:
    """'tensorboard' when TensorBoard can be imported (the Trainer's test for it), else 'none'."""
    installed = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    return "tensorboard" if installed else "none"


def machine_defaults() -> dict[str, Any]:
    """Defaults that depend on this machine: applied when the arguments are built, never written into
    recipe.yaml, so the resolved recipe reruns the same elsewhere."""
    return {
        # TensorBoard when it is installed (pip install vit_hf[tensorboard]): tensorboard --logdir OUTPUT_DIR/runs
        "report_to": default_report_to(),
        # Workers decode (streams, data.loader: decode) or page in (mmap); one core stays for the training loop.
        "dataloader_num_workers": min(4, max(0, (os.cpu_count() or 1) - 1)),
    }


def training_section(values: dict[str, Any]) -> dict[str, Any]:
    """The recipe's `training:` values, checked against TrainingArguments' fields, over vit_hf's defaults."""
    fields = _training_fields()
    check_keys("training", values, list(fields))
    for key, value in values.items():
        if value is not None:
            check_type(f"training.{key}", value, _loosen(fields[key]))
    return TRAINING_DEFAULTS | values


@functools.cache
def _training_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints.get(f.name, typing.Any) for f in dataclasses.fields(TrainingArguments) if f.init}


def _loosen(annotation):
    """Enum-typed TrainingArguments fields (IntervalStrategy, SchedulerType, ...) take their string values."""
    if _is_enum(annotation):
        return str
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.Union[tuple(str if _is_enum(a) else a for a in args)]
    return annotation


def _is_enum(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


# With a time budget and no step or epoch limit, the budget ends training; the Trainer still needs a
# finite loop length.
UNLIMITED_EPOCHS = 1_000_000
UNLIMITED_STEPS = 1_000_000_000


def training_arguments(recipe: Recipe) -> TrainingArguments:
    """The run's TrainingArguments: the recipe's training section, the loop length left to the budget when
    only a budget limits it. The one builder: the command line's checks, training, evaluation and search
    all use it."""
    values = dict(recipe.training)
    limited = int(values.get("max_steps", -1) or -1) > 0 or "num_train_epochs" in values
    if recipe.budget.time is not None and not limited:
        values["max_steps" if recipe.data.streaming else "num_train_epochs"] = (
            UNLIMITED_STEPS if recipe.data.streaming else UNLIMITED_EPOCHS)
    return build_training_arguments(values)


def build_training_arguments(values: dict[str, Any]) -> TrainingArguments:
    """TrainingArguments(**values) with the machine's defaults and settings, its own validation errors turned
    into RecipeErrors naming recipe keys.

    The Hub token never enters TrainingArguments: the Trainer pickles them whole into training_args.bin, in
    output_dir and in every (pushed) checkpoint. cli.run hands a recipe's training.hub_token to
    huggingface_hub through HF_TOKEN instead."""
    values = {key: value for key, value in values.items() if key not in SECRET_TRAINING_KEYS}
    try:
        return TrainingArguments(**(machine_defaults() | values | _hardware_settings(values)))
    except (ValueError, TypeError) as exc:
        # Its messages name command-line flags (--save_strategy): name the recipe keys instead.
        raise RecipeError("training: " + re.sub(r"--(\w+)", r"training.\1", str(exc))) from None


def _hardware_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings this machine's hardware decides: on an Ampere or newer GPU, tf32 (see _tf32); on a
    machine without an accelerator: use_cpu, and a bf16 recipe still runs, on the CPU.

    use_cpu is what makes `torchrun --nproc_per_node N` train with DDP (gloo) on CPUs: without it,
    accelerate's PartialState starts DDP only on an accelerator, and each process would train
    alone (world_size 1), all of them writing the same output_dir.
    TrainingArguments refuses bf16 without a GPU unless use_cpu is set. CPU bf16 autocast only pays
    on CPUs with AMX tiles: elsewhere it is slower than fp32 (ViT-Tiny/4 at 32 px on a 2-core
    AVX-512 Xeon: 60 vs 85 img/s), so there it trains in fp32. Decided here, not written into the
    recipe: the same recipe.yaml uses bf16 on the GPU. An explicit use_cpu keeps the recipe's bf16.
    """
    if values.get("use_cpu") is not None:
        return {}
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    if has_accelerator:
        if values.get("bf16"):
            _check_gpu_bf16()
        return _tf32(values)
    if not values.get("bf16") or _cpu_has_amx():
        return {"use_cpu": True}
    return {"use_cpu": True, "bf16": False}


def _tf32(values: dict[str, Any]) -> dict[str, Any]:
    """tf32 on for an Ampere or newer GPU unless the recipe says: fp32 matrix products (an fp32 recipe's
    every layer, and what a bf16 run keeps in fp32) run on the tensor cores at ~8x the fp32 rate, with a
    10-bit mantissa that training does not notice (NVIDIA's default for cuDNN convolutions already)."""
    if values.get("tf32") is not None or not torch.cuda.is_available():
        return {}
    return {"tf32": True} if torch.cuda.get_device_capability()[0] >= 8 else {}


def _check_gpu_bf16() -> None:
    """A GPU without bf16 (before Ampere: V100, T4) would fail at the first step, or emulate it slowly."""
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise RecipeError(
            f"training.bf16: true, but this GPU ({torch.cuda.get_device_name()}) has no bf16 support; "
            "set training.fp16: true (and bf16: false) for mixed precision, or bf16: false for fp32"
        )


@functools.cache
def _cpu_has_amx() -> bool:
    try:
        amx = "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        amx = False
    if not amx:
        logger.info("no GPU and no AMX on this CPU: training in fp32, faster here than bf16 autocast")
    return amx
