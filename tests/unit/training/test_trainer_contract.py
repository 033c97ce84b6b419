"""The private Trainer methods VitTrainer overrides: each still exists in the installed transformers with the
parameters the override expects. A transformers upgrade that renames or reshapes one fails here, loudly,
instead of leaving an override that silently never runs."""

from __future__ import annotations

import inspect

import pytest
from transformers import Trainer

from vit_hf.training.trainer import PRIVATE_HOOKS, VitTrainer


def parameters(method) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(method).parameters.values()]


@pytest.mark.parametrize("name", PRIVATE_HOOKS)
def test_each_private_hook_still_exists_in_the_trainer_with_the_same_parameters(name):
    theirs = getattr(Trainer, name, None)
    assert theirs is not None, f"transformers.Trainer.{name} is gone: VitTrainer.{name} would never be called"
    assert parameters(getattr(VitTrainer, name)) == parameters(theirs)


def test_every_private_method_vit_hf_overrides_is_listed_with_its_reason():
    overridden = {name for name, value in vars(VitTrainer).items()
                  if name.startswith("_") and not name.startswith("__") and callable(value) and hasattr(Trainer, name)}
    assert overridden == set(PRIVATE_HOOKS)
