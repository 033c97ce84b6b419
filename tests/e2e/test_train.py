"""End to end through the real entry point: recipe -> datasets on disk -> ViT -> Trainer -> output_dir."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tests.helpers import ROOT, SHARED_CIFAR10
from tests.helpers.datagen import CLASSES, class_image, make_imagefolder, make_parquet_dataset
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.training.evaluate import RemapLabels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real run of `python -m vit_hf.run` on a tiny imagefolder; shared by the checks below."""
    tmp = tmp_path_factory.mktemp("trained")
    data = make_imagefolder(tmp / "data", per_class=12, size=20)
    out = tmp / "out"
    recipe = write_recipe(tmp, tiny_recipe(data, out))
    result = subprocess.run(
        [sys.executable, "-m", "vit_hf.run", str(recipe)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"data": data, "out": out, "recipe": recipe, "log": result.stderr + result.stdout}


def test_output_dir_holds_what_the_ecosystem_uses(trained):
    out = trained["out"]
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "recipe.yaml",
                 "eval_results.json", "trainer_state.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(CLASSES)
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_accuracy"] >= 0.9  # three distinct colours: learnable in a few dozen steps
    assert results["eval_top5_accuracy"] == 1.0  # three classes: top-5 always holds the answer


def test_log_states_the_plan_up_front(trained):
    log = trained["log"]
    assert "3 classes" in log and "images (8 x 1 devices x 1 accumulation)" in log and "epoch: 5 steps" in log


def test_pipeline_answers_with_the_dataset_label_names(trained):
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(trained["out"]))
    rng = __import__("numpy").random.default_rng(7)
    for class_id, name in enumerate(CLASSES):
        answer = classify(class_image(class_id, rng, size=20))
        assert answer[0]["label"] == name


def test_eval_only_reproduces_the_accuracy(trained, tmp_path):
    out = tmp_path / "eval"
    code = main([str(trained["recipe"]), "--eval-only", "--model.pretrained", str(trained["out"]),
                 "--training.output_dir", str(out)])
    assert code == 0
    again = json.loads((out / "eval_results.json").read_text())
    first = json.loads((trained["out"] / "eval_results.json").read_text())
    assert again["eval_accuracy"] == pytest.approx(first["eval_accuracy"])
    assert not list(out.glob("checkpoint-*")) and not (out / "optimizer.pt").exists()


def test_eval_only_label_remap_happens_where_the_labels_are():
    # A device store hands out labels on the accelerator; the dataset -> model id table must follow them
    # there (a CPU table indexed by CUDA labels raises). "meta" stands in for a device this CPU lacks.
    remap = RemapLabels([2, 0, 1])
    on_device = remap({"pixel_values": torch.zeros(3, 3, 4, 4), "labels": torch.tensor([0, 1, 2], device="meta")})
    assert on_device["labels"].device.type == "meta"
    on_cpu = remap({"pixel_values": torch.zeros(3, 3, 4, 4), "labels": torch.tensor([0, 1, 2])})
    assert on_cpu["labels"].tolist() == [2, 0, 1]


def test_rerunning_the_written_recipe_reproduces_the_run(trained, tmp_path):
    written = yaml.safe_load((trained["out"] / "recipe.yaml").read_text())
    written["training"]["output_dir"] = str(tmp_path / "again")
    assert main([str(write_recipe(tmp_path, written))]) == 0
    first = json.loads((trained["out"] / "eval_results.json").read_text())
    again = json.loads((tmp_path / "again" / "eval_results.json").read_text())
    assert again["eval_accuracy"] == pytest.approx(first["eval_accuracy"])
    assert again["eval_loss"] == pytest.approx(first["eval_loss"], rel=1e-4)


def test_odd_image_modes_and_flat_imagefolder_with_carved_validation(tmp_path):
    """Grayscale/palette/RGBA images, no split folders: validation_size carves the eval split."""
    data = tmp_path / "data"
    for mode in ("L", "P", "RGBA"):
        make_imagefolder(data, per_class=4, size=20, splits=None, mode=mode, seed=len(mode))
        for path in data.rglob("*.png"):
            if not path.stem.startswith("m"):
                path.rename(path.with_name(f"m{mode}_{path.name}"))
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=3)
    recipe["data"]["validation_size"] = 0.25
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert 0 <= results["eval_accuracy"] <= 1


def test_budget_run_ends_inside_its_budget_with_the_lr_annealed(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=12, size=20)
    recipe = tiny_recipe(data, tmp_path / "out", lr_scheduler_type="cosine", warmup_steps=0.1, logging_steps=1)
    del recipe["training"]["num_train_epochs"]
    recipe["budget"] = {"time": "20s"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vit_hf.run", str(write_recipe(tmp_path, recipe))],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    interpreter_startup = 10  # importing torch + transformers on a busy 2-core machine
    assert 0.6 * 20 < elapsed < 20 + interpreter_startup  # it used its budget, and kept to it
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    lrs = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert state["global_step"] >= 5  # more than the steps needed to reach the peak and come down
    assert max(lrs) == pytest.approx(3e-3, rel=0.3)
    assert lrs[-1] < 3e-3 * 1e-3  # annealed to the minimum at the last step
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("loader", ["mmap", "decode"])
def test_each_loader_trains_to_the_same_place(trained, tmp_path, loader):
    """The default run above used the in-memory cache; the other paths must learn the same task."""
    recipe = yaml.safe_load(trained["recipe"].read_text())
    recipe["training"]["output_dir"] = str(tmp_path / "out")
    recipe["data"]["loader"] = loader
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_accuracy"] >= 0.9


def test_streaming_parquet_with_a_step_limit(tmp_path):
    data = make_parquet_dataset(tmp_path / "data", shards=2, image_column="img", per_class=8)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=6, dataloader_num_workers=2)
    recipe["data"]["streaming"] = True
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_accuracy"] >= 0


def test_a_budgeted_stream_trains_pass_after_pass_until_the_budget_ends(tmp_path):
    # 24 training images, batches of 8: a pass is 3 steps. Before, the Trainer asked the spent stream for
    # each of its billion remaining steps (no callback runs meanwhile, so no budget could stop it).
    data = make_parquet_dataset(tmp_path / "data", shards=2, image_column="img", per_class=8)
    recipe = tiny_recipe(data, tmp_path / "out", eval_strategy="no", save_strategy="no")
    del recipe["training"]["num_train_epochs"]
    recipe["data"].update(streaming=True, max_eval_samples=24)  # the budget reserves the final evaluation of 24
    recipe["budget"] = {"time": "30s"}
    started = time.monotonic()
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    assert time.monotonic() - started < 30 + 3
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["epoch"] >= 2  # several passes over the stream
    assert state["global_step"] > 6


def test_fine_tuning_gets_a_new_head_new_resolution_and_the_checkpoint_normalization(tmp_path, tiny_pretrained):
    """tiny_pretrained: 3 labels class_0..2 at 16 px, mean = std = 0.5; the dataset: cat/dog/frog at 24 px."""
    data = make_imagefolder(tmp_path / "data", per_class=6, size=20)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=4)
    recipe["model"] = {"pretrained": str(tiny_pretrained)}
    recipe["data"].update(image_size=24, crop="random_resized")
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert list(config["id2label"].values()) == list(CLASSES)
    assert config["image_size"] == 24
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5] * 3 and processor["crop_size"] == {"height": 24, "width": 24}
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(tmp_path / "out")
    assert model.vit.embeddings.position_embeddings.shape[1] == (24 // 4) ** 2 + 1


def test_early_stopping_ends_training_before_the_epochs_run_out(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=6, size=20)
    recipe = tiny_recipe(data, tmp_path / "out", load_best_model_at_end=True, metric_for_best_model="accuracy")
    recipe["early_stopping"] = {"patience": 1, "threshold": 10.0}  # no evaluation can improve by 10
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2.0)  # first evaluation sets the best, the second runs out of patience
    assert state["best_model_checkpoint"] is not None


def test_bad_dataset_path_fails_before_training_with_exit_2(tmp_path):
    recipe = tiny_recipe(tmp_path / "nowhere", tmp_path / "out")
    assert main([str(write_recipe(tmp_path, recipe))]) == 2
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR10.is_dir(), reason="../shared/datasets/cifar10 is absent")
def test_cifar10_short_budget(tmp_path):
    """The CPU recipe on real data, for a short budget: ends on time, well above chance (10%)."""
    out = tmp_path / "out"
    started = time.monotonic()
    code = main([str(ROOT / "recipes" / "cifar10_cpu_10m.yaml"), "--data.dataset", str(SHARED_CIFAR10),
                 "--budget.time", "60s", "--training.output_dir", str(out), "--data.max_eval_samples", "2000"])
    assert code == 0
    assert time.monotonic() - started < 60 + 5
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_accuracy"] > 0.2
