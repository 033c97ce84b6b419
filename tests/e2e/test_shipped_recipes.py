"""The shipped recipes: each one parses, opens with the header a user needs, and the from-scratch CIFAR
recipes train with every option they set (conv stem, augmentation, mixing, progressive resizing, extras)
through the real CLI on generated 32 px images, save, and answer through `pipeline`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import pipeline

from tests.helpers import ROOT
from tests.helpers.datagen import CLASSES, class_image, make_imagefolder
from vit_hf.cli.run import main
from vit_hf.recipe.load import load_recipe

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
HEADER_FIELDS = ("Command:", "Hardware:", "Expected:", "Saves:")


def header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])


def test_the_shipped_recipes_are_all_found():
    assert {path.stem for path in RECIPES} >= {"cifar10_tiny", "cifar10_hybrid", "cifar10_cpu_10m", "cifar100_small",
                                               "vit_base_finetune_cifar10", "imagenet1k_vit_s16_24h",
                                               "imagenet_subset", "demo_digits"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_each_recipe_parses_and_its_header_states_command_hardware_and_expected_result(path):
    recipe = load_recipe(path)
    assert recipe.training["output_dir"]
    text = header(path)
    for field in HEADER_FIELDS:
        assert f"# {field}" in text, f"{path.name}: header lacks {field!r}"
    expected = text[text.index("# Expected:"):]
    assert "Measured" in expected or "target" in expected, f"{path.name}: Expected says neither measured nor target"


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("cifar_like"), per_class=8, size=32)


@pytest.mark.parametrize("name", ["cifar10_tiny", "cifar10_hybrid", "cifar10_cpu_10m", "cifar100_small"])
def test_cifar_recipe_trains_saves_and_answers_through_pipeline(name, cifar_like, tmp_path):
    out = tmp_path / "out"
    code = main([str(ROOT / "recipes" / f"{name}.yaml"), "--data.dataset", str(cifar_like),
                 "--training.output_dir", str(out), "--training.max_steps", "3", "--budget.time", "null",
                 "--training.per_device_train_batch_size", "8", "--training.dataloader_num_workers", "0",
                 "--resume", "never"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert saved["patch_size"] == recipe.vit_config["patch_size"]
    assert saved.get("stem", "patch") == recipe.model.stem  # the option the recipe chose is what was saved
    assert 0 <= json.loads((out / "eval_results.json").read_text())["eval_accuracy"] <= 1
    answer = pipeline("image-classification", model=str(out))(class_image(1, np.random.default_rng(1), size=32))
    assert {entry["label"] for entry in answer} <= set(CLASSES) and len(answer) == len(CLASSES)


def test_the_search_recipe_searches_on_a_holdout_of_train_and_writes_its_best_recipe(cifar_like, tmp_path):
    out = tmp_path / "search"
    code = main([str(ROOT / "recipes" / "cifar10_search.yaml"), "--search", "--data.dataset", str(cifar_like),
                 "--training.output_dir", str(out), "--search.n_trials", "2", "--search.time", "null",
                 "--training.max_steps", "2", "--training.eval_steps", "1", "--data.validation_size", "10",
                 "--training.per_device_train_batch_size", "8", "--training.dataloader_num_workers", "0"])
    assert code == 0
    rows = (out / "search_results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # a header and one row per trial
    best = load_recipe(out / "best_recipe.yaml")
    assert best.data.eval_split == "holdout" and not best.search.space


# A fresh interpreter that never imports vit_hf: what a user of the stock stack runs on the flagship's output.
STOCK_PIPELINE = """
import json, sys
from pathlib import Path
from transformers import pipeline
from PIL import Image
classify = pipeline("image-classification", model=sys.argv[1])
images = sorted(Path(sys.argv[2]).glob("*/*.png"))
top1 = [classify(Image.open(path))[0]["label"] for path in images]
print(json.dumps({"model": type(classify.model).__name__, "vit_hf_imported": "vit_hf" in sys.modules,
                  "accuracy": sum(label == path.parent.name for label, path in zip(top1, images)) / len(images)}))
"""


def test_the_flagship_saves_a_stock_vit_that_a_pipeline_loads_without_vit_hf(cifar_like, tmp_path):
    out = tmp_path / "out"
    code = main([str(ROOT / "recipes" / "cifar10_tiny.yaml"), "--data.dataset", str(cifar_like),
                 "--training.output_dir", str(out), "--training.max_steps", "3", "--budget.time", "null",
                 "--training.per_device_train_batch_size", "8", "--training.dataloader_num_workers", "0",
                 "--resume", "never"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["architectures"] == ["ViTForImageClassification"]
    assert "auto_map" not in config and not list(out.glob("*.py"))  # no custom code to trust
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", STOCK_PIPELINE, str(out), str(cifar_like / "test")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["model"] == "ViTForImageClassification" and not answer["vit_hf_imported"]
    # The stock processor reproduces vit_hf's evaluation: the same accuracy, within one image of 24.
    evaluated = json.loads((out / "eval_results.json").read_text())["eval_accuracy"]
    assert abs(answer["accuracy"] - evaluated) <= 1 / 24 + 1e-9
