"""`python -m vit_hf.run --help`: every recipe key with its type, default and help text."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from transformers import TrainingArguments

from .schema import RESUME_HELP, SECTIONS, ModelConfig, vit_config_keys
from .training_args import TRAINING_DEFAULTS, machine_defaults
from .validate import describe


def help_text() -> str:
    """Every recipe key with its type, default and help, for `--help`."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"\n{name}:")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(_help_line(f"{name}.{f.name}", describe(hints[f.name]), default, f.metadata.get("help", "")))
        if cls is ModelConfig:
            lines.append(f"  model.<ViTConfig field>  any of: {', '.join(vit_config_keys())}; overrides the preset")
    lines.append(_help_line("resume", "a string", "auto", RESUME_HELP))
    lines.append("\ntraining: (transformers.TrainingArguments; vit_hf defaults marked *)")
    lines.extend(_training_help_lines())
    return "\n".join(lines)


def _help_line(key: str, kind: str, default: Any, text: str) -> str:
    return f"  {key}  ({kind}; default {default!r})\n      {text}"


def _training_help_lines() -> list[str]:
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
