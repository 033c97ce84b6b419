"""A NaN loss never reaches the weights: `stop` saves the last good weights and exits 4, `skip` rides
out an isolated spike. The NaN is real: a hook makes the classifier's logits NaN at one training step."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerControl

import vit_hf.training.train
from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.training.stopping import MAX_NONFINITE_IN_A_ROW, NonFiniteGuard


@pytest.fixture
def nan_at_step(monkeypatch):
    """nan_at_step(k): the model built by the next run returns NaN logits at its k-th training step."""

    def install(step: int) -> None:
        build = vit_hf.training.train.build_model

        def build_with_nan(*args, **kwargs):
            model = build(*args, **kwargs)
            calls = {"training": 0}

            def poison(module, inputs, logits):
                if not module.training:
                    return logits
                calls["training"] += 1
                return logits * math.nan if calls["training"] == step else logits

            model.classifier.register_forward_hook(poison)
            return model

        monkeypatch.setattr(vit_hf.training.train, "build_model", build_with_nan)

    return install


def nan_recipe(tmp_path, **early_stopping):
    data = make_imagefolder(tmp_path / "data", per_class=4, size=16)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=5, eval_strategy="no", save_strategy="steps",
                         save_steps=1, logging_steps=1)
    recipe["early_stopping"] = early_stopping
    return write_recipe(tmp_path, recipe)


def test_under_fp16_loss_scaling_isolated_overflows_are_the_scalers_and_a_run_of_them_stops():
    guard, state = NonFiniteGuard("stop"), SimpleNamespace(global_step=0)

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], fused=True)

    def step(grad_norm: float) -> TrainerControl:
        control = TrainerControl()
        state.global_step += 1
        guard.check(torch.tensor(grad_norm), optimizer, state.global_step, loss_scaled=True)
        assert not hasattr(optimizer, "found_inf")  # the GradScaler drops the update, and sets that flag itself
        guard.on_step_end(None, state, control)
        return control

    assert not step(math.inf).should_training_stop and not step(1.0).should_training_stop
    stops = [step(math.nan).should_training_stop for _ in range(MAX_NONFINITE_IN_A_ROW)]
    assert stops == [False] * (MAX_NONFINITE_IN_A_ROW - 1) + [True] and guard.stopped_at == state.global_step


def weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


@pytest.mark.parametrize("optim", ["adamw_torch_fused", "adamw_torch"])
def test_a_nan_loss_stops_with_the_last_good_weights_and_exit_4(tmp_path, nan_at_step, capsys, optim):
    # Fused: the optimizer skips the update on the device (found_inf); for-each: the guard drops its gradients.
    nan_at_step(3)
    assert main([str(nan_recipe(tmp_path)), "--training.optim", optim]) == 4
    err = capsys.readouterr().err
    assert "training stopped at step 3: non-finite loss" in err and "checkpoint-3" in err
    out = tmp_path / "out"
    before, stopped = weights(out / "checkpoint-2"), weights(out / "checkpoint-3")
    assert all(torch.equal(before[name], stopped[name]) for name in before)  # the NaN update was not applied
    moments = [torch.load(out / name / "optimizer.pt", weights_only=True)["state"] for name in ("checkpoint-2",
                                                                                                "checkpoint-3")]
    assert all(torch.equal(moments[0][i]["exp_avg"], moments[1][i]["exp_avg"]) for i in moments[0])  # nor its moments
    assert all(torch.isfinite(t).all() for t in stopped.values())
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    assert not (out / "model.safetensors").exists()  # not a finished run


def test_skip_rides_out_an_isolated_nan_and_finishes(tmp_path, nan_at_step, caplog):
    nan_at_step(2)
    assert main([str(nan_recipe(tmp_path, on_nonfinite_loss="skip"))]) == 0
    assert "step 2: non-finite loss or gradient; its update was not applied" in caplog.text
    out = tmp_path / "out"
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 5
    assert all(torch.isfinite(t).all() for t in weights(out).values())
