"""The `model:` options (vit_hf.modeling): conv stem, GAP head, sincos2d position embeddings, drop path.

Each trains through the real CLI, saves, reloads and answers through `pipeline`; a conv stem or GAP
head saves a "vit_hf" model, loaded with vit_hf imported or, without it, through auto_map and
trust_remote_code. The unit tests check each option against what it claims.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, ViTForImageClassification, pipeline

from tests.helpers import ROOT
from tests.helpers.datagen import CLASSES, class_image, make_imagefolder
from tests.helpers.recipes import TINY_MODEL, tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.errors import RecipeError
from vit_hf.hub.card import write_model_card
from vit_hf.modeling import VitHfForImageClassification
from vit_hf.modeling.build import build_model, load_pretrained
from vit_hf.modeling.posemb import sincos2d_table
from vit_hf.recipe.load import recipe_from_dict
from vit_hf.recipe.schema import ModelConfig

TINY = {key: value for key, value in TINY_MODEL.items() if key != "preset"}
LABELS = list(CLASSES)


def tiny_model(**options):
    torch.manual_seed(0)
    return build_model(ModelConfig(**options), TINY, LABELS, image_size=16)


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def train_through_cli(tmp: Path, **model_options) -> Path:
    data = make_imagefolder(tmp / "data", per_class=8, size=20)
    recipe = tiny_recipe(data, tmp / "out", max_steps=4, eval_strategy="no", save_strategy="no")
    del recipe["training"]["num_train_epochs"]
    recipe["model"].update(model_options)
    assert main([str(write_recipe(tmp, recipe))]) == 0
    return tmp / "out"


def pipeline_labels(model_dir: Path, **kwargs) -> list[str]:
    classify = pipeline("image-classification", model=str(model_dir), **kwargs)
    answer = classify(class_image(0, np.random.default_rng(0), size=20), top_k=3)
    return sorted(entry["label"] for entry in answer)


# Through the CLI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_gap_run(tmp_path_factory) -> Path:
    return train_through_cli(tmp_path_factory.mktemp("conv_gap"), stem="conv", pool="gap")


@pytest.fixture(scope="module")
def sincos_drop_path_run(tmp_path_factory) -> Path:
    return train_through_cli(tmp_path_factory.mktemp("sincos"), posemb="sincos2d", drop_path_rate=0.2)


def test_conv_stem_and_gap_save_a_vit_hf_model_with_its_code(conv_gap_run):
    config = json.loads((conv_gap_run / "config.json").read_text())
    assert (config["model_type"], config["stem"], config["pool"]) == ("vit_hf", "conv", "gap")
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_vit_hf.VitHfForImageClassification"
    assert (conv_gap_run / "modeling_vit_hf.py").is_file() and (conv_gap_run / "configuration_vit_hf.py").is_file()


def test_a_vit_hf_model_reloads_and_evaluates_as_trained(conv_gap_run, tmp_path):
    model = AutoModelForImageClassification.from_pretrained(conv_gap_run)
    assert type(model) is VitHfForImageClassification and model.config.stem == "conv"
    out = tmp_path / "eval"
    recipe = conv_gap_run / "recipe.yaml"
    assert main([str(recipe), "--eval-only", "--model.pretrained", str(conv_gap_run),
                 "--training.output_dir", str(out)]) == 0
    trained = json.loads((conv_gap_run / "eval_results.json").read_text())
    again = json.loads((out / "eval_results.json").read_text())
    assert again["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-5)  # the saved weights are the trained ones


def test_pipeline_loads_a_vit_hf_model_with_vit_hf_imported(conv_gap_run):
    assert pipeline_labels(conv_gap_run) == sorted(CLASSES)


def test_pipeline_loads_a_vit_hf_model_without_vit_hf_through_remote_code(conv_gap_run, tmp_path):
    """auto_map + the saved modeling files: a user without vit_hf, trust_remote_code=True."""
    script = f"""
import json, sys, numpy as np
from transformers import pipeline
sys.path.insert(0, {str(ROOT)!r})
from tests.helpers.datagen import class_image
classify = pipeline("image-classification", model={str(conv_gap_run)!r}, trust_remote_code=True)
answer = classify(class_image(0, np.random.default_rng(0), size=20), top_k=3)
imported = [name for name in sys.modules if name.split(".")[0] == "vit_hf"]
print(json.dumps({{"module": type(classify.model).__module__, "answer": answer, "vit_hf": imported}}))
"""
    env = os.environ | {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["vit_hf"] == [] and remote["module"].startswith("transformers_modules.")
    assert remote["module"].endswith(".modeling_vit_hf")
    local = pipeline("image-classification", model=str(conv_gap_run))(
        class_image(0, np.random.default_rng(0), size=20), top_k=3
    )
    assert [a["label"] for a in remote["answer"]] == [a["label"] for a in local]
    assert [a["score"] for a in remote["answer"]] == pytest.approx([a["score"] for a in local], rel=1e-5)


def test_the_model_card_of_a_vit_hf_model_imports_vit_hf_before_loading_it(conv_gap_run):
    text = write_model_card(conv_gap_run, model_id="someone/conv-gap").read_text()
    usage = text[text.index("## How to use"):text.index("## Training")]
    assert usage.index("import vit_hf") < usage.index('pipeline("image-classification", model="someone/conv-gap")')
    assert "trust_remote_code" not in usage


def test_the_model_card_of_a_plain_vit_needs_no_remote_code(sincos_drop_path_run):
    text = write_model_card(sincos_drop_path_run, model_id="someone/plain").read_text()
    usage = text[text.index("## How to use"):text.index("## Training")]
    assert 'pipeline("image-classification", model="someone/plain")' in usage and "import vit_hf" not in usage


def test_sincos_and_drop_path_save_a_plain_vit_that_keeps_sincos_frozen(sincos_drop_path_run):
    config = json.loads((sincos_drop_path_run / "config.json").read_text())
    assert config["model_type"] == "vit" and "auto_map" not in config and config["posemb"] == "sincos2d"
    assert pipeline_labels(sincos_drop_path_run) == sorted(CLASSES)
    saved = ViTForImageClassification.from_pretrained(sincos_drop_path_run).vit.embeddings.position_embeddings
    torch.testing.assert_close(saved[0, 1:], sincos2d_table(4, 4, 32))  # trained 4 steps, not moved
    finetuned = load_pretrained(ModelConfig(pretrained=str(sincos_drop_path_run)), {}, ["a", "b"], image_size=32)
    embeddings = finetuned.vit.embeddings.position_embeddings
    assert not embeddings.requires_grad  # the config's posemb keeps them frozen when fine-tuning
    torch.testing.assert_close(embeddings[0, 1:], sincos2d_table(8, 8, 32))  # recomputed for 32 px, not interpolated


# Each option against its definition ------------------------------------------------------------------


@pytest.mark.parametrize("patch_size, convs", [(4, 2), (16, 4)])
def test_conv_stem_has_one_stride_2_conv_per_factor_2_of_the_patch(patch_size, convs):
    torch.manual_seed(0)
    model = build_model(ModelConfig(stem="conv"), TINY | {"patch_size": patch_size}, LABELS, image_size=32)
    stem = model.vit.embeddings.patch_embeddings
    strided = [m for m in stem.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(strided) == convs and all(m.stride == (2, 2) and m.kernel_size == (3, 3) for m in strided)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in stem.convs) == convs
    assert stem.projection.kernel_size == (1, 1) and strided[-1].out_channels == 32
    assert stem(torch.zeros(2, 3, 32, 32)).shape == (2, (32 // patch_size) ** 2, 32)


def test_gap_classifies_the_mean_of_the_patch_tokens():
    model = tiny_model(pool="gap").eval()
    x = images()
    tokens = model.vit(x).last_hidden_state
    torch.testing.assert_close(model(x).logits, model.classifier(tokens[:, 1:].mean(dim=1)))


def test_every_option_reloads_with_equal_weights(tmp_path):
    model = tiny_model(stem="conv", pool="gap", posemb="sincos2d", drop_path_rate=0.1)
    model.train()(images())  # BatchNorm running statistics move: they must be saved too
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    saved, loaded = model.state_dict(), reloaded.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    torch.testing.assert_close(reloaded.eval()(images()).logits, model.eval()(images()).logits)


def test_sincos2d_is_the_big_vision_formula_and_frozen():
    model = tiny_model(posemb="sincos2d")
    table = model.vit.embeddings.position_embeddings
    grid, quarter = 4, 8  # 16 px / patch 4; hidden 32 / 4
    y, x = np.mgrid[:grid, :grid]
    omega = 1.0 / 10_000 ** (np.arange(quarter) / (quarter - 1))
    x, y = np.outer(x.ravel(), omega), np.outer(y.ravel(), omega)
    expected = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    np.testing.assert_allclose(table[0, 1:].numpy(), expected, atol=1e-6)
    assert torch.equal(table[0, 0], torch.zeros(32))  # the CLS position, as MoCo v3
    assert not table.requires_grad and model.config.posemb == "sincos2d"


def test_drop_path_changes_training_outputs_but_not_evaluation_outputs():
    model, plain = tiny_model(drop_path_rate=0.5), tiny_model()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    x = images()
    model.train(), plain.train()  # hidden dropout is 0: without drop path, training outputs equal eval's
    assert not torch.allclose(model(x).logits, plain(x).logits)
    torch.testing.assert_close(model.eval()(x).logits, plain.eval()(x).logits)
    hooks = [len(layer.attention._forward_hooks) + len(layer.mlp._forward_hooks) for layer in model.vit.layers]
    assert hooks == [0, 2]  # rates linear in depth from 0: the first block is never dropped


# Validation -------------------------------------------------------------------------------------------


def recipe_with(model: dict):
    return {"data": {"dataset": "somewhere"}, "model": {"preset": "vit-tiny", **model}}


@pytest.mark.parametrize("model, message", [
    ({"stem": "conv", "patch_size": 6}, "power of 2"),
    ({"stem": "conv", "patch_size": 2}, "power of 2"),
    ({"posemb": "sincos2d", "hidden_size": 30, "num_attention_heads": 3}, "multiple of 4"),
    ({"drop_path_rate": 1.0}, "[0, 1)"),
    ({"stem": "convolution"}, "one of 'patch', 'conv'"),
])
def test_impossible_model_options_are_recipe_errors(model, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        recipe_from_dict(recipe_with(model))


def test_a_conv_stem_on_a_patch_checkpoint_is_an_error_naming_why(tiny_pretrained):
    cfg = ModelConfig(pretrained=str(tiny_pretrained), stem="conv")
    with pytest.raises(RecipeError, match="was trained with stem 'patch' and its weights only fit that"):
        load_pretrained(cfg, {}, LABELS, image_size=16)


def test_a_conv_stem_in_channels_last_trains_ema_included_and_saves_weights_that_evaluate_the_same(
    tmp_path, monkeypatch
):
    # On a GPU a conv stem trains in channels_last (NHWC) memory format; here it is forced on the CPU.
    import vit_hf.training.build

    def forced(model, device):
        model.to(memory_format=torch.channels_last)
        return True

    monkeypatch.setattr(vit_hf.training.build, "use_channels_last", forced)
    data = make_imagefolder(tmp_path / "data", per_class=8, size=16)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=6, eval_strategy="no")
    recipe["model"]["stem"] = "conv"
    recipe["extras"] = {"ema_decay": 0.9}
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    monkeypatch.undo()  # evaluated again in the standard layout
    again = tmp_path / "eval"
    assert main([str(tmp_path / "out" / "recipe.yaml"), "--eval-only", "--model.pretrained", str(tmp_path / "out"),
                 "--training.output_dir", str(again)]) == 0
    trained = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    evaluated = json.loads((again / "eval_results.json").read_text())
    assert evaluated["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-4)
