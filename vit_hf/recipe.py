"""A recipe: one YAML file -> validated, typed configuration, before any data or model is touched.

Seven sections: `data`, `model`, `training` (transformers.TrainingArguments verbatim, so HF's docs
apply), `early_stopping`, `budget`, `extras` (vit_hf's training options beyond TrainingArguments),
`search` (the hyperparameter search of --search; its space is checked in search_space.py).
Unknown keys at any level are errors that suggest the closest valid key; wrong types name the key,
the value and the expected type. Command-line overrides (`--section.key value`) are merged before
validation, so they get the same checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import (
    RESUME_HELP,
    SECTIONS,
    BudgetConfig,
    DataConfig,
    EarlyStoppingConfig,
    ExtrasConfig,
    ModelConfig,
    SearchConfig,
)
from .durations import parse_duration
from .errors import RecipeError

logger = logging.getLogger(__name__)

# ViTConfig fields a recipe may set under `model:` (beside preset/pretrained). image_size is
# data.image_size and the label maps come from the dataset, so they are not listed.
VIT_CONFIG_KEYS: dict[str, type] = {
    "patch_size": int,
    "hidden_size": int,
    "num_hidden_layers": int,
    "num_attention_heads": int,
    "intermediate_size": int,
    "hidden_act": str,
    "hidden_dropout_prob": float,
    "attention_probs_dropout_prob": float,
    "initializer_range": float,
    "layer_norm_eps": float,
    "qkv_bias": bool,
    "encoder_stride": int,
}

# Where HF's TrainingArguments defaults do not fit image training. Each is overridable.
TRAINING_DEFAULTS: dict[str, Any] = {
    # The image column must reach the transform: Trainer would drop it (DESIGN.md, hard-won facts).
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

# Keys that take durations: '90s', '45m', '24h', or seconds.
DURATION_KEYS = ("budget.time", "budget.save_every", "search.time")

# Recipe keys that are values, not sections.
TOP_LEVEL_KEYS = ("resume",)



def machine_defaults() -> dict[str, Any]:
    """Defaults that depend on this machine: applied when the arguments are built, never written into
    recipe.yaml, so the resolved recipe reruns the same elsewhere."""
    from .report import default_report_to

    return {
        # TensorBoard when it is installed (pip install vit_hf[tensorboard]): tensorboard --logdir OUTPUT_DIR/runs
        "report_to": default_report_to(),
        # Workers decode (streams, data.loader: decode) or page in (mmap); one core stays for the training loop.
        "dataloader_num_workers": min(4, max(0, (os.cpu_count() or 1) - 1)),
    }


# Never written to recipe.yaml, logs or model cards: a secret, or an environment-dependent value.
SECRET_TRAINING_KEYS = ("hub_token",)


@dataclass
class Recipe:
    data: DataConfig
    model: ModelConfig
    training: dict[str, Any]  # kwargs for TrainingArguments; built by training_arguments()
    early_stopping: EarlyStoppingConfig
    budget: BudgetConfig
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)  # EMA, layer-wise LR decay, flip TTA
    search: SearchConfig = field(default_factory=SearchConfig)  # used by --search (search.py)
    vit_config: dict[str, Any] = field(default_factory=dict)  # ViTConfig overrides from `model:`
    resume: str = "auto"  # see config.RESUME_HELP
    source: str | None = None  # the YAML file it came from

    def training_arguments(self):
        """The validated `transformers.TrainingArguments`."""
        return build_training_arguments(self.training)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every vit_hf key with its value, and the training keys that were set."""
        model = dataclasses.asdict(self.model) | self.vit_config
        training = {k: v for k, v in self.training.items() if k not in SECRET_TRAINING_KEYS}
        return {
            "data": dataclasses.asdict(self.data),
            "model": model,
            "training": training,
            "early_stopping": dataclasses.asdict(self.early_stopping),
            "budget": dataclasses.asdict(self.budget),
            "extras": dataclasses.asdict(self.extras),
            "resume": self.resume,
            # Only a recipe that defines a search carries the section (best_recipe.yaml does not).
            **({"search": dataclasses.asdict(self.search)} if self.search.space else {}),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------------------------
# Loading


class RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no tags that build objects) that reads scalars as YAML 1.2 does.

    PyYAML follows YAML 1.1, where a float needs a dot ('3.0e-4'), so learning_rate: 3e-4 would be a
    string and an error; and where yes/no/on/off are booleans, so `eval_strategy: no` (or
    `--training.eval_strategy no`) would be False, not the strategy "no". YAML 1.2: floats with or
    without a dot, and only true/false as booleans.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read, merge the `--section.key value` overrides, validate; raises RecipeError."""
    raw = read_yaml(path)
    for dotted, value in parse_overrides(overrides or []):
        set_dotted(raw, dotted, value)
    return recipe_from_dict(raw, source=str(path))


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist; pass the path of a YAML recipe, e.g. recipes/cifar10_tiny.yaml")
    try:
        # safe_load: a recipe is data; tags like !!python/object must never construct objects.
        raw = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe file {str(path)!r} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe file {str(path)!r} must be a mapping with sections {sorted(SECTIONS) + ['training']} and resume")
    return raw


def parse_overrides(argv: list[str]) -> list[tuple[str, Any]]:
    """`--data.image_size 64` and `--data.image_size=64` -> [("data.image_size", 64)]; values are YAML scalars."""
    pairs, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0][2:]
        if not arg.startswith("--") or ("." not in name and name not in TOP_LEVEL_KEYS):
            raise RecipeError(
                f"unexpected argument {arg!r}; overrides look like --section.key value, --section.key=value "
                "or --resume value"
            )
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise RecipeError(f"override {arg!r} has no value; write {arg} VALUE")
            key, text = arg[2:], argv[i + 1]
            i += 2
        pairs.append((key, _yaml_scalar(key, text)))
    return pairs


def _yaml_scalar(key: str, text: str) -> Any:
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        raise RecipeError(f"--{key}: {text!r} is not a YAML value") from None


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for name in parents:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--{dotted}: {name!r} is not a section")
        node = child
    node[last] = value


# ----------------------------------------------------------------------------------------------
# Validation


def recipe_from_dict(raw: dict[str, Any], source: str | None = None) -> Recipe:
    _check_keys("", raw, list(SECTIONS) + ["training", *TOP_LEVEL_KEYS])
    sections = {}
    for name, cls in SECTIONS.items():
        values = _section(raw, name)
        extra = {}
        if cls is ModelConfig:
            extra = {k: values.pop(k) for k in list(values) if k in VIT_CONFIG_KEYS}
            _check_vit_types(extra)
            _check_keys(name, values, [f.name for f in dataclasses.fields(cls)] + list(VIT_CONFIG_KEYS))
        sections[name] = _build_dataclass(name, cls, values)
        if extra:
            sections["vit_config"] = extra
    training = _training_section(raw)
    recipe = Recipe(
        data=sections["data"],
        model=sections["model"],
        training=training,
        early_stopping=sections["early_stopping"],
        budget=sections["budget"],
        extras=sections["extras"],
        search=sections["search"],
        vit_config=sections.get("vit_config", {}),
        resume=check_type("resume", raw.get("resume", "auto"), str),
        source=source,
    )
    _check_combinations(recipe)
    if recipe.search.space:
        from .search_space import check_search_space

        check_search_space(raw)
    return recipe


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    values = raw.get(name) or {}
    if not isinstance(values, dict):
        raise RecipeError(f"{name}: must be a mapping of keys to values, got {values!r}")
    return dict(values)


def _check_keys(section: str, values: dict[str, Any], valid: list[str]) -> None:
    for key in values:
        if key not in valid:
            where = f"{section}.{key}" if section else key
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
            kind = "section" if not section else "key"
            raise RecipeError(f"unknown {kind} {where!r}{hint}")


def _build_dataclass(section: str, cls: type, values: dict[str, Any]):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(section, {k: v for k, v in values.items() if cls is not ModelConfig or k in fields}, list(fields))
    hints = typing.get_type_hints(cls)
    converted = {}
    for key, value in values.items():
        if f"{section}.{key}" in DURATION_KEYS and value not in (None, "auto"):
            value = _duration(f"{section}.{key}", value)
        converted[key] = check_type(f"{section}.{key}", value, hints[key])
    return cls(**converted)


def _duration(key: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise RecipeError(f"{key}: {exc}") from None


def _check_vit_types(values: dict[str, Any]) -> None:
    for key, value in values.items():
        check_type(f"model.{key}", value, VIT_CONFIG_KEYS[key])


def check_type(key: str, value: Any, expected) -> Any:
    """`value` if it is of the annotated type (ints pass as floats); else RecipeError naming all three."""
    if _matches(value, expected):
        if expected is float and isinstance(value, int):
            return float(value)
        return value
    raise RecipeError(f"{key}: {value!r} is not {_describe(expected)}")


def _matches(value: Any, expected) -> bool:
    origin = typing.get_origin(expected)
    if expected is typing.Any:
        return True
    if expected is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if origin in (list, tuple):
        (item,) = typing.get_args(expected)[:1] or (typing.Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def _describe(expected) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(expected))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(expected))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(expected)[0])}"
    if expected is type(None):
        return "null"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
    return names.get(expected, getattr(expected, "__name__", str(expected)))


# ----------------------------------------------------------------------------------------------
# training: TrainingArguments


def _training_section(raw: dict[str, Any]) -> dict[str, Any]:
    values = _section(raw, "training")
    fields = _training_fields()
    _check_keys("training", values, list(fields))
    for key, value in values.items():
        if value is not None:
            check_type(f"training.{key}", value, _loosen(fields[key]))
    return TRAINING_DEFAULTS | values


def _training_fields() -> dict[str, Any]:
    from transformers import TrainingArguments

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


def build_training_arguments(values: dict[str, Any]):
    """TrainingArguments(**values), with its own validation errors turned into RecipeErrors.

    The Hub token never enters TrainingArguments: the Trainer pickles them whole into
    training_args.bin, in output_dir and in every (pushed) checkpoint. A recipe's training.hub_token
    goes to this process's HF_TOKEN instead, which huggingface_hub reads before the stored login."""
    from transformers import TrainingArguments

    if values.get("hub_token"):
        os.environ["HF_TOKEN"] = values["hub_token"]
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
    import torch

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
    import torch

    if values.get("tf32") is not None or not torch.cuda.is_available():
        return {}
    return {"tf32": True} if torch.cuda.get_device_capability()[0] >= 8 else {}


def _check_gpu_bf16() -> None:
    """A GPU without bf16 (before Ampere: V100, T4) would fail at the first step, or emulate it slowly."""
    import torch

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


# ----------------------------------------------------------------------------------------------
# Combinations that no single key can check


def _check_combinations(recipe: Recipe) -> None:
    data, model, training = recipe.data, recipe.model, recipe.training
    if not data.dataset:
        raise RecipeError("data.dataset is required: a Hub dataset id (uoft-cs/cifar10) or a local folder")
    if not model.preset and not model.pretrained:
        raise RecipeError("model: set model.preset (vit-tiny, vit-small, vit-base) or model.pretrained (Hub id or path)")
    _check_data_values(data)
    _check_model_options(model, recipe.vit_config)
    _check_extras(recipe.extras)
    _check_best_model_checkpoints(training)
    if recipe.early_stopping.patience is not None:
        if recipe.early_stopping.patience < 1:
            raise RecipeError(f"early_stopping.patience: {recipe.early_stopping.patience} must be >= 1 (or null for off)")
        if str(training.get("eval_strategy", "no")) == "no":
            raise RecipeError("early_stopping.patience needs evaluations: set training.eval_strategy to 'epoch' or 'steps'")
    if data.streaming and int(training.get("max_steps", -1) or -1) <= 0 and recipe.budget.time is None:
        raise RecipeError(
            "data.streaming: a stream has no length, so the run needs a limit: set training.max_steps or budget.time"
        )
    if "output_dir" not in training or not training["output_dir"]:
        stem = Path(recipe.source).stem if recipe.source else "run"
        training["output_dir"] = str(Path("outputs") / stem)


def _check_best_model_checkpoints(training: dict[str, Any]) -> None:
    """load_best_model_at_end reloads the checkpoint of the best evaluation: there must be one at each evaluation."""
    if not training.get("load_best_model_at_end"):
        return
    evaluate, save = str(training.get("eval_strategy", "no")), str(training.get("save_strategy", "steps"))
    if save != "best" and evaluate != save:
        raise RecipeError(
            f"training.load_best_model_at_end needs a checkpoint at each evaluation, but training.save_strategy is "
            f"{save!r} and training.eval_strategy is {evaluate!r}; set both to 'epoch', or both to 'steps' with "
            "training.save_steps a multiple of training.eval_steps"
        )


def _check_model_options(model: ModelConfig, vit_config: dict[str, Any]) -> None:
    """The `model:` options a recipe alone can check; models.check_matches_checkpoint checks them
    against a pretrained checkpoint, once its config is read."""
    if not 0 <= model.drop_path_rate < 1:
        raise RecipeError(f"model.drop_path_rate: {model.drop_path_rate!r} is not valid; expected a number in [0, 1)")
    if model.pretrained:
        return
    from .models import PRESETS

    fields = PRESETS[model.preset] | vit_config
    patch_size = fields.get("patch_size", 16)  # ViTConfig's default
    if model.stem == "conv" and (patch_size < 4 or patch_size & (patch_size - 1)):
        raise RecipeError(
            f"model.stem: 'conv' needs model.patch_size a power of 2 >= 4 (one stride-2 conv per factor 2), "
            f"got {patch_size}; use 4 (32 px images), 8 or 16"
        )
    if model.posemb == "sincos2d" and (fields["hidden_size"] % 4 or fields["hidden_size"] < 8):
        raise RecipeError(
            f"model.posemb: 'sincos2d' splits hidden_size into 4 sin/cos quarters; hidden_size {fields['hidden_size']} "
            "is not a multiple of 4 (>= 8)"
        )


def _check_extras(extras: ExtrasConfig) -> None:
    if extras.ema_decay is not None and not 0 < extras.ema_decay < 1:
        raise RecipeError(f"extras.ema_decay: {extras.ema_decay!r} is not valid; expected a number in (0, 1) such as 0.9998, or null")
    if extras.layer_decay is not None and not 0 < extras.layer_decay <= 1:
        raise RecipeError(f"extras.layer_decay: {extras.layer_decay!r} is not valid; expected a number in (0, 1] such as 0.75, or null")


def _check_data_values(data: DataConfig) -> None:
    checks = [
        (data.image_size is None or data.image_size >= 8, "data.image_size", data.image_size, "an integer >= 8"),
        (0 < data.crop_pct <= 1, "data.crop_pct", data.crop_pct, "a number in (0, 1]"),
        (0 <= data.hflip <= 1, "data.hflip", data.hflip, "a probability in [0, 1]"),
        (0 <= data.color_jitter < 1, "data.color_jitter", data.color_jitter, "a number in [0, 1)"),
        (data.pad >= 0, "data.pad", data.pad, "an integer >= 0"),
        (data.validation_size > 0, "data.validation_size", data.validation_size, "a fraction in (0, 1) or a count >= 1"),
        (_is_range(data.crop_scale, 0, 1), "data.crop_scale", data.crop_scale, "[min, max] with 0 < min <= max <= 1"),
        (_is_range(data.crop_ratio, 0, 100), "data.crop_ratio", data.crop_ratio, "[min, max] with 0 < min <= max"),
        (len(data.progressive_ramp) == 2 and 0 <= data.progressive_ramp[0] <= data.progressive_ramp[1] <= 1,
         "data.progressive_ramp", data.progressive_ramp, "[start, end] with 0 <= start <= end <= 1"),
        (data.progressive_start_size is None or data.progressive_start_size >= 8, "data.progressive_start_size",
         data.progressive_start_size, "an integer >= 8 (or null for off)"),
        (data.progressive_sizes >= 2, "data.progressive_sizes", data.progressive_sizes, "an integer >= 2"),
        (data.mean is None or len(data.mean) == 3, "data.mean", data.mean, "3 numbers, one per RGB channel"),
        (data.std is None or (len(data.std) == 3 and min(data.std) > 0), "data.std", data.std, "3 positive numbers"),
        (data.shuffle_buffer >= 1, "data.shuffle_buffer", data.shuffle_buffer, "an integer >= 1"),
        (data.randaugment_ops >= 1, "data.randaugment_ops", data.randaugment_ops, "an integer >= 1"),
        (0 <= data.randaugment_magnitude <= 10, "data.randaugment_magnitude", data.randaugment_magnitude,
         "an integer in [0, 10]"),
        (0 <= data.random_erasing <= 1, "data.random_erasing", data.random_erasing, "a probability in [0, 1]"),
        (data.mixup_alpha >= 0, "data.mixup_alpha", data.mixup_alpha, "a number >= 0 (0 = off)"),
        (data.cutmix_alpha >= 0, "data.cutmix_alpha", data.cutmix_alpha, "a number >= 0 (0 = off)"),
        (0 <= data.mix_prob <= 1, "data.mix_prob", data.mix_prob, "a probability in [0, 1]"),
        (0 <= data.mix_switch_prob <= 1, "data.mix_switch_prob", data.mix_switch_prob, "a probability in [0, 1]"),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise RecipeError(f"{key}: {value!r} is not valid; expected {expected}")
    for key in ("max_per_class", "max_train_samples", "max_eval_samples"):
        value = getattr(data, key)
        if value is not None and value < 1:
            raise RecipeError(f"data.{key}: {value!r} must be >= 1 (or null for all)")
    if isinstance(data.classes, int) and data.classes < 2:
        raise RecipeError(f"data.classes: {data.classes!r} must be a count >= 2 or a list of label names")


def _is_range(pair: list[float], low: float, high: float) -> bool:
    return len(pair) == 2 and low < pair[0] <= pair[1] <= high


# ----------------------------------------------------------------------------------------------
# --help


def help_text() -> str:
    """Every recipe key with its type, default and help, for `--help`."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"\n{name}:")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(_help_line(f"{name}.{f.name}", _describe(hints[f.name]), default, f.metadata.get("help", "")))
        if cls is ModelConfig:
            lines.append(f"  model.<ViTConfig field>  any of: {', '.join(VIT_CONFIG_KEYS)}; overrides the preset")
    lines.append(_help_line("resume", "a string", "auto", RESUME_HELP))
    lines.append("\ntraining: (transformers.TrainingArguments; vit_hf defaults marked *)")
    lines.extend(_training_help_lines())
    return "\n".join(lines)


def _help_line(key: str, kind: str, default: Any, text: str) -> str:
    return f"  {key}  ({kind}; default {default!r})\n      {text}"


def _training_help_lines() -> list[str]:
    from transformers import TrainingArguments

    lines = []
    for f in dataclasses.fields(TrainingArguments):
        if not f.init or f.name.startswith("_"):
            continue
        defaults = TRAINING_DEFAULTS | machine_defaults()
        ours = f.name in defaults
        default = defaults[f.name] if ours else (None if f.default is dataclasses.MISSING else f.default)
        help_text = " ".join(str(f.metadata.get("help", "")).split())
        lines.append(f"  training.{f.name}{' *' if ours else ''}  (default {default!r})\n      {help_text}")
    return lines
