"""The recipe's `extras:` (weight EMA, flip TTA, layer-wise LR decay) and the weight-decay rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, ViTForImageClassification, default_data_collator

from tests.helpers.datagen import make_imagefolder
from tests.helpers.models import tiny_vit_config
from tests.helpers.recipes import tiny_recipe, write_recipe
from tests.helpers.trainers import MEAN, STD, TinyImages, arguments, scramble
from vit_hf.augment.transform import build_eval_transform
from vit_hf.cli.run import main
from vit_hf.errors import RecipeError
from vit_hf.metrics import DEFAULT_METRICS
from vit_hf.modeling.build import build_model
from vit_hf.recipe.help import help_text
from vit_hf.recipe.load import recipe_from_dict
from vit_hf.recipe.schema import ModelConfig
from vit_hf.training.batches import RunOptions
from vit_hf.training.ema import EMA_FILE, WeightEma
from vit_hf.training.metrics import load_metrics, top_k_predictions
from vit_hf.training.trainer import VitTrainer


def make(tmp_path, model=None, callbacks=(), trainer_options=None, **overrides) -> VitTrainer:
    torch.manual_seed(0)
    options = RunOptions(eval_transform=build_eval_transform(MEAN, STD), **(trainer_options or {}))
    return VitTrainer(
        model=model or ViTForImageClassification(tiny_vit_config()), args=arguments(tmp_path, **overrides),
        train_dataset=TinyImages(), eval_dataset=TinyImages(seed=1), data_collator=default_data_collator,
        compute_metrics=load_metrics(DEFAULT_METRICS), preprocess_logits_for_metrics=top_k_predictions, options=options,
        callbacks=list(callbacks), ema=next((c for c in callbacks if isinstance(c, WeightEma)), None),
    )


def weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


# Weight EMA ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """6 steps with EMA, evaluations and checkpoints at 3 and 6, load_best_model_at_end."""
    out = tmp_path_factory.mktemp("ema")
    ema = WeightEma(0.9)
    trainer = make(out, callbacks=[ema], max_steps=6, save_steps=3, eval_steps=3, load_best_model_at_end=True,
                   metric_for_best_model="loss", greater_is_better=False, save_total_limit=None)
    trainer.train()
    return trainer, ema, out


def test_ema_follows_the_warmed_up_decay():
    model, ema = torch.nn.Linear(2, 2), WeightEma(0.99)
    start = weights(model)
    ema.on_train_begin(None, None, None, model=model)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.on_step_end(None, None, None, model=model)
    decay = 1 / 10  # min(0.99, (1 + 0) / (10 + 0)): the first update mostly takes the new weights
    torch.testing.assert_close(ema.shadow["weight"], decay * start["weight"] + (1 - decay) * model.weight)
    assert ema.updates == 1 and ema.current_decay() == pytest.approx(2 / 11)


def test_checkpoints_keep_ema_weights_that_differ_from_the_live_ones(ema_run):
    _, _, out = ema_run
    for step in (3, 6):
        checkpoint = out / f"checkpoint-{step}"
        averaged = load_file(checkpoint / EMA_FILE)
        assert not same(averaged, ViTForImageClassification.from_pretrained(checkpoint).state_dict())
        assert all(value.dtype == torch.float32 for value in averaged.values())


def test_the_final_model_is_the_best_checkpoints_ema_and_is_what_gets_saved(ema_run, tmp_path):
    """Evaluations rank EMA weights, so load_best_model_at_end ends on the best checkpoint's EMA."""
    trainer, _, _ = ema_run
    best = Path(trainer.state.best_model_checkpoint)
    assert same(weights(trainer.model), load_file(best / EMA_FILE))
    trainer.save_model(str(tmp_path))
    assert same(ViTForImageClassification.from_pretrained(tmp_path).state_dict(), load_file(best / EMA_FILE))


def test_resume_continues_the_ema_of_the_checkpoint(ema_run, tmp_path):
    _, _, out = ema_run
    ema = WeightEma(0.9)
    resumed = make(tmp_path, callbacks=[ema], max_steps=6, save_steps=3, eval_strategy="no")
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-3"))
    assert ema.updates == 6  # 3 restored with the checkpoint's average, then 3 more
    # The same average as the uninterrupted run's: resume restores it exactly.
    assert same(load_file(tmp_path / "checkpoint-6" / EMA_FILE), load_file(out / "checkpoint-6" / EMA_FILE))


def test_evaluation_uses_the_ema_weights_and_leaves_the_live_ones(tmp_path):
    ema = WeightEma(0.9)
    trainer = make(tmp_path, callbacks=[ema])
    ema.on_train_begin(trainer.args, trainer.state, trainer.control, model=trainer.model)
    of_the_ema = trainer.evaluate()["eval_loss"]  # live weights == EMA weights here
    scramble(trainer.model)
    live = weights(trainer.model)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(of_the_ema)
    assert same(weights(trainer.model), live)


# Flip TTA -----------------------------------------------------------------------------------------------


def test_flip_tta_is_the_mean_of_the_logits_of_the_image_and_its_mirror(tmp_path):
    trainer = make(tmp_path, trainer_options={"eval_flip_tta": True})
    batch = default_data_collator([TinyImages()[i] for i in range(6)])
    _, logits, labels = trainer.prediction_step(trainer.model, dict(batch), prediction_loss_only=False)
    normalize = build_eval_transform(MEAN, STD)
    with torch.no_grad():
        trainer.model.eval()
        plain = trainer.model(normalize(batch["pixel_values"])).logits
        mirrored = trainer.model(normalize(batch["pixel_values"].flip(-1))).logits
    torch.testing.assert_close(logits, (plain + mirrored) / 2)
    assert not torch.allclose(plain, mirrored) and torch.equal(labels, batch["labels"])


# Weight decay and layer-wise learning rates ----------------------------------------------------------------


def test_no_weight_decay_on_position_embeddings_cls_token_norms_and_biases(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(stem="conv"), {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                                   "intermediate_size": 64, "patch_size": 4}, ["a", "b"], 16)
    trainer = make(tmp_path, model=model)
    decayed = set(trainer.get_decay_parameter_names(model))
    # transformers 5.24 decays them: what vit_hf fixes (if this fails, transformers changed its rule)
    assert "vit.embeddings.position_embeddings" in Trainer.get_decay_parameter_names(trainer, model)
    for name, parameter in model.named_parameters():
        skipped = parameter.ndim == 1 or name.endswith(("position_embeddings", "cls_token"))
        assert (name not in decayed) == skipped, name
    assert {"vit.layers.0.attention.q_proj.weight", "classifier.weight",
            "vit.embeddings.patch_embeddings.convs.0.weight"} <= decayed


def test_layer_decay_gives_each_depth_its_learning_rate_with_the_recipes_optimizer(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(posemb="sincos2d"), {"hidden_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "intermediate_size": 64, "patch_size": 4}, ["a", "b"], 16)
    trainer = make(tmp_path, model=model, trainer_options={"layer_decay": 0.5}, optim="sgd",
                   learning_rate=0.1, weight_decay=0.05)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD)  # training.optim is honoured
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    expected_lr = {"vit.embeddings.": 0.1 * 0.5**3, "vit.layers.0.": 0.1 * 0.5**2, "vit.layers.1.": 0.1 * 0.5,
                   "vit.layernorm.": 0.1, "classifier.": 0.1}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert id(parameter) not in group_of  # frozen sincos2d embeddings are not optimized
            continue
        group = group_of[id(parameter)]
        lr = next(lr for prefix, lr in expected_lr.items() if name.startswith(prefix))
        assert group["lr"] == pytest.approx(lr), name
        assert group["weight_decay"] == (0.0 if parameter.ndim == 1 or name.endswith("cls_token") else 0.05), name
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # the logged learning_rate is the head's


# Through the recipe and the CLI --------------------------------------------------------------------------


def test_extras_keys_are_validated_and_listed_in_help():
    extras = {"ema_decay": 0.9998, "layer_decay": 0.75, "eval_flip_tta": True, "check_host_syncs": True}
    raw = {"data": {"dataset": "somewhere"}, "extras": extras}
    assert recipe_from_dict(raw).to_dict()["extras"] == raw["extras"]
    with pytest.raises(RecipeError, match="extras.ema_decay: 1.5 is not valid"):
        recipe_from_dict(raw | {"extras": {"ema_decay": 1.5}})
    with pytest.raises(RecipeError, match="did you mean 'ema_decay'"):
        recipe_from_dict(raw | {"extras": {"ema_decy": 0.9}})
    assert all(f"extras.{key}" in help_text() for key in extras)


def test_cli_run_with_every_extra_saves_the_ema_weights(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=8, size=20)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=4, save_strategy="steps", save_steps=4, eval_strategy="no")
    del recipe["training"]["num_train_epochs"]
    recipe["extras"] = {"ema_decay": 0.99, "layer_decay": 0.75, "eval_flip_tta": True}
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    out = tmp_path / "out"
    final = ViTForImageClassification.from_pretrained(out).state_dict()
    assert same(final, load_file(out / "checkpoint-4" / EMA_FILE))
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] >= 0
