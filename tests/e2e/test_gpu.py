"""The GPU tier: every device path through the real CLI (`python -m vit_hf.run`) on tiny generated data.

    pytest -m gpu tests/e2e/test_gpu.py          # on a machine with CUDA; skipped everywhere else
    pytest -m gpu tests/e2e/test_gpu.py -n 10    # with pytest-xdist: each test is its own CLI runs

Each test trains (or evaluates) a tiny ViT in a subprocess, as a user would, and checks what a user would
check: exit code 0, accuracy well above chance (1/3) on the three learnable generated classes, the output
files, the weights after a resume. Covered: data.loader auto / device / memory / mmap / decode,
data.streaming, training.bf16, training.fp16 (loss scaling), training.torch_compile, extras.ema_decay,
extras.eval_flip_tta, Mixup/CutMix, RandAugment and TrivialAugment, progressive resizing, model.stem: conv,
a timm ViT fine-tuned through TimmWrapper (where timm imports), SIGTERM + resume, --eval-only on a dataset
whose label order differs from the model's, and extras.check_host_syncs with every shipped recipe's option
set (plus a run with a planted host sync in the step, which must fail).

Only public behaviour: recipe keys, the CLI, the files in output_dir. VIT_HF_GPU_TESTS_ON_CPU=1 runs the
tier on a CPU (slowly; the CUDA-only tests stay skipped) to check the tests themselves without a GPU.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.helpers import ROOT
from tests.helpers.datagen import CLASSES, class_image, make_imagefolder, make_parquet_dataset
from tests.helpers.recipes import TINY_MODEL

ON_CPU = os.environ.get("VIT_HF_GPU_TESTS_ON_CPU") == "1"
CUDA = torch.cuda.is_available()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (CUDA or ON_CPU), reason="GPU tier: needs CUDA (VIT_HF_GPU_TESTS_ON_CPU=1 forces it)"),
]
cuda_only = pytest.mark.skipif(not CUDA, reason="needs CUDA")

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
LEARNED = 0.9  # plain training on the generated classes: every CPU run of these settings reaches 1.0
ABOVE_CHANCE = 0.6  # chance is 1/3; under heavy augmentation or mixing, in a few dozen steps
RUN_TIMEOUT = 600  # seconds for one CLI process; a compile on a loaded machine is the slowest

SHRINK = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "2",
          "--model.intermediate_size", "64"]


# Running the CLI ---------------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    log: str
    out: Path

    def ok(self) -> Run:
        assert self.code == 0, f"exit code {self.code}:\n{self.log[-4000:]}"
        assert "Traceback" not in self.log, self.log[-4000:]
        return self

    @property
    def results(self) -> dict:
        return json.loads((self.out / "eval_results.json").read_text())

    @property
    def accuracy(self) -> float:
        return self.results["eval_accuracy"]

    @property
    def state(self) -> dict:
        return json.loads((self.out / "trainer_state.json").read_text())


def cli(*args: str, out: Path, command: list[str] | None = None) -> Run:
    """`python -m vit_hf.run ARGS` (or `command + ARGS`), as a user runs it; output_dir is `out`."""
    command = command or [sys.executable, "-m", "vit_hf.run"]
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                            timeout=RUN_TIMEOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    return Run(result.returncode, result.stdout + result.stderr, out)


def write_recipe(tmp_path: Path, data: Path, **training) -> Path:
    """A tiny recipe: 16 px, ViT 2 x 32, 60 steps of batch 16 on 96 images, one evaluation at the end."""
    raw = {
        "data": {"dataset": str(data), "image_size": 16, "crop": "pad", "pad": 2, "hflip": 0.0,
                 "cache_dir": str(tmp_path / "cache")},
        "model": dict(TINY_MODEL),
        "training": {
            "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
            "learning_rate": 3e-3, "num_train_epochs": 10, "logging_steps": 10, "eval_strategy": "no",
            "save_strategy": "no", "dataloader_num_workers": 0, "seed": 0, "report_to": "none", **training,
        },
        "resume": "never",
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train(tmp_path: Path, data: Path, *overrides: str, **training) -> Run:
    return cli(write_recipe(tmp_path, data, **training), *overrides, out=tmp_path / "out")


def assert_saved(out: Path) -> None:
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "recipe.yaml",
                 "eval_results.json", "trainer_state.json"):
        assert (out / name).is_file(), f"{name} missing from {out}"


def assert_losses_finite(run: Run) -> None:
    losses = [entry["loss"] for entry in run.state["log_history"] if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses), losses


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a saved model or checkpoint, as from_pretrained loads them (key names converted)."""
    from transformers import AutoModelForImageClassification

    import vit_hf  # noqa: F401  (registers vit_hf's model type, for conv-stem and GAP models)

    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [name for name in a if not torch.equal(a[name], b[name].to(a[name].dtype))]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:5]}"


def saved_dtypes(out: Path) -> set[torch.dtype]:
    from safetensors.torch import load_file

    return {tensor.dtype for tensor in load_file(out / "model.safetensors").values()}


# Data --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """train/ and test/ imagefolders, 32 images of each class at 20 px."""
    return make_imagefolder(tmp_path_factory.mktemp("images"), per_class=32, size=20)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, images) -> Run:
    """One plain run, data.loader auto; shared by the checks that need a trained model."""
    return train(tmp_path_factory.mktemp("trained"), images)


# Data paths --------------------------------------------------------------------------------------------


def test_auto_loader_puts_small_data_on_the_gpu_and_learns(trained):
    trained.ok()
    assert f"data: loader {'device' if CUDA else 'memory'} " in trained.log  # a few MB fit on any GPU
    assert_saved(trained.out)
    assert trained.accuracy >= LEARNED
    assert trained.results["eval_top5_accuracy"] == 1.0
    assert_losses_finite(trained)


@pytest.mark.parametrize("loader", ["device", "memory", "mmap", "decode"])
def test_each_loader_learns(tmp_path, images, loader):
    if loader == "device" and not CUDA:
        pytest.skip("data.loader: device on a CPU is the memory store")
    run = train(tmp_path, images, "--data.loader", loader).ok()
    assert f"data: loader {loader} (" in run.log  # the path asked for is the path taken
    assert run.accuracy >= LEARNED


def test_streaming_parquet_with_workers(tmp_path):
    data = make_parquet_dataset(tmp_path / "stream", shards=4, image_column="img", per_class=32)
    run = train(tmp_path, data, "--data.streaming", "true", "--training.max_steps", "60",
                "--training.dataloader_num_workers", "2").ok()
    assert run.state["global_step"] == 60
    assert run.accuracy >= LEARNED
    assert_saved(run.out)


# Precision and compilation -----------------------------------------------------------------------------


def test_bf16_learns_and_saves_fp32_weights(tmp_path, images):
    run = train(tmp_path, images, "--training.bf16", "true").ok()
    assert run.accuracy >= LEARNED
    assert_losses_finite(run)
    assert saved_dtypes(run.out) == {torch.float32}  # autocast: the master weights stay fp32


@cuda_only
def test_fp16_scales_the_loss_learns_and_saves_fp32_weights(tmp_path, images):
    run = train(tmp_path, images, "--training.fp16", "true", "--training.save_strategy", "steps",
                "--training.save_steps", "60").ok()
    assert run.accuracy >= LEARNED
    assert_losses_finite(run)
    assert saved_dtypes(run.out) == {torch.float32}
    scaler = torch.load(run.out / "checkpoint-60" / "scaler.pt", weights_only=True)  # the GradScaler's state
    assert math.isfinite(float(scaler["scale"])) and float(scaler["scale"]) > 0


def test_torch_compile_learns_and_saves_loadable_weights(tmp_path, images):
    from safetensors.torch import load_file

    run = train(tmp_path, images, "--training.torch_compile", "true", "--training.bf16", "true").ok()
    assert run.accuracy >= LEARNED
    assert_losses_finite(run)
    assert not [k for k in load_file(run.out / "model.safetensors") if "_orig_mod" in k]  # not the compiled wrapper's
    out = tmp_path / "reloaded"  # the saved model, loaded as any user loads it, scores what the run did
    again = cli(tmp_path / "recipe.yaml", "--eval-only", "--model.pretrained", run.out, "--training.output_dir", out,
                out=out).ok()
    assert again.accuracy == pytest.approx(run.accuracy, abs=0.02)


# extras ------------------------------------------------------------------------------------------------


def test_ema_weights_are_evaluated_and_saved(tmp_path, images):
    from safetensors.torch import load_file

    run = train(tmp_path, images, "--extras.ema_decay", "0.9", "--training.save_strategy", "steps",
                "--training.save_steps", "60").ok()
    assert run.accuracy >= LEARNED
    checkpoint = run.out / "checkpoint-60"
    average = load_file(checkpoint / "ema.safetensors")  # the checkpoint keeps the average, for resume
    final = weights(run.out)
    assert_same_weights(final, average)  # the saved model is the average ...
    live = weights(checkpoint)
    assert any(not torch.equal(live[name], final[name]) for name in final)  # ... not the live weights


def test_flip_tta_evaluates_each_image_and_its_mirror(tmp_path, images):
    run = train(tmp_path, images, "--extras.eval_flip_tta", "true").ok()
    assert run.accuracy >= LEARNED
    recipe = tmp_path / "recipe.yaml"
    evaluations = {}
    for tta in ("true", "false"):
        out = tmp_path / f"eval_tta_{tta}"
        evaluations[tta] = cli(recipe, "--eval-only", "--model.pretrained", run.out, "--extras.eval_flip_tta", tta,
                               "--training.output_dir", out, out=out).ok().results
    with_tta, without = evaluations["true"]["eval_loss"], evaluations["false"]["eval_loss"]
    assert with_tta == pytest.approx(run.results["eval_loss"], rel=1e-4)  # the run's final evaluation used TTA
    # The mirror moves a confident model's loss only a little (measured: 6e-5 of it), far above float noise.
    assert abs(without - with_tta) > 1e-5 * with_tta
    assert evaluations["false"]["eval_accuracy"] >= LEARNED


# Augmentation, mixing, resolution, stem --------------------------------------------------------------


def test_mixup_and_cutmix_learn(tmp_path, images):
    run = train(tmp_path, images, "--data.mixup_alpha", "0.8", "--data.cutmix_alpha", "1.0").ok()
    assert run.accuracy >= ABOVE_CHANCE
    assert_losses_finite(run)
    config = json.loads((run.out / "config.json").read_text())
    assert config.get("problem_type") in (None, "single_label_classification")  # soft targets never made it BCE


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_auto_augment_policies_learn(tmp_path, images, policy):
    run = train(tmp_path, images, "--data.auto_augment", policy).ok()
    assert run.accuracy >= ABOVE_CHANCE
    assert_losses_finite(run)


def test_progressive_resizing_learns_and_saves_the_full_size_model(tmp_path, images):
    run = train(tmp_path, images, "--data.progressive_start_size", "8").ok()
    assert run.accuracy >= LEARNED
    config = json.loads((run.out / "config.json").read_text())
    assert config["image_size"] == 16
    position = next(v for k, v in weights(run.out).items() if k.endswith("position_embeddings"))
    assert position.shape[1] == (16 // 4) ** 2 + 1  # full-size embeddings in the checkpoint


def test_conv_stem_learns_and_answers_through_pipeline(tmp_path, images):
    from transformers import pipeline

    import vit_hf  # noqa: F401  (a conv-stem model is vit_hf's model type)

    run = train(tmp_path, images, "--model.stem", "conv").ok()
    assert run.accuracy >= LEARNED
    config = json.loads((run.out / "config.json").read_text())
    assert config["model_type"] == "vit_hf" and config["stem"] == "conv"
    classify = pipeline("image-classification", model=str(run.out))
    rng = np.random.default_rng(7)
    answers = [classify(class_image(class_id, rng, size=20))[0]["label"] for class_id in range(len(CLASSES))]
    assert answers == list(CLASSES)


def test_a_timm_vit_fine_tunes_at_a_new_size_and_answers_through_pipeline(tmp_path, images):
    """model.pretrained: a timm ViT through TimmWrapperForImageClassification (timm needs torchvision: run where
    it imports), fine-tuned from 16 to 24 px with layer-wise decay, in bf16 on CUDA."""
    pytest.importorskip("timm")
    from transformers import pipeline

    from tests.helpers.models import save_checkpoint

    checkpoint = save_checkpoint("timm_vit", tmp_path / "timm")
    recipe = write_recipe(tmp_path, images)
    raw = yaml.safe_load(recipe.read_text())
    raw["model"] = {"pretrained": str(checkpoint.path)}
    raw["data"]["image_size"] = 24
    raw["extras"] = {"layer_decay": 0.75}
    recipe.write_text(yaml.safe_dump(raw))
    run = cli(recipe, "--training.bf16", "true" if CUDA else "false", out=tmp_path / "out").ok()
    assert run.accuracy >= ABOVE_CHANCE
    assert_losses_finite(run)
    config = json.loads((run.out / "config.json").read_text())
    assert config["model_args"]["img_size"] == 24 and config["pretrained_cfg"]["input_size"] == [3, 24, 24]
    classify = pipeline("image-classification", model=str(run.out))
    answer = classify(class_image(0, np.random.default_rng(7), size=20), top_k=3)
    assert sorted(entry["label"] for entry in answer) == sorted(CLASSES)


# Stop, resume, evaluate ----------------------------------------------------------------------------------


def newest_checkpoint(out: Path) -> Path | None:
    complete = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


def test_sigterm_checkpoint_restores_exactly_and_the_rerun_continues(tmp_path, images):
    # One step per epoch (batch = the 96 training images): a run resumed at step K with max_steps K takes
    # no step, so its saved model is exactly what the resume restored.
    recipe = write_recipe(tmp_path, images, per_device_train_batch_size=96, max_steps=100_000,
                          save_strategy="steps", save_steps=10, logging_steps=10)
    recipe.write_text(recipe.read_text().replace("resume: never", "resume: auto"))
    out = tmp_path / "out"
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "vit_hf.run", str(recipe)], cwd=ROOT, stdout=sink,
                                   stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            while newest_checkpoint(out) is None and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    first = log.read_text()
    assert code == 0, first[-4000:]
    assert "stopped by a signal" in first and "Traceback" not in first
    assert not (out / "model.safetensors").exists()  # stopped, not finished
    checkpoint = newest_checkpoint(out)
    step = int(checkpoint.name.split("-")[1])
    shutil.copytree(out, tmp_path / "continued")

    restored = cli(recipe, "--training.max_steps", step, out=out).ok()
    assert f"resume: from {checkpoint}" in restored.log
    assert restored.state["global_step"] == step
    assert_same_weights(weights(out), weights(checkpoint))  # every tensor restored, the encoder's too
    assert restored.accuracy >= LEARNED

    continued = cli(recipe, "--training.max_steps", step + 20, "--training.output_dir", tmp_path / "continued",
                    out=tmp_path / "continued").ok()
    assert f"resume: from {tmp_path / 'continued' / checkpoint.name}" in continued.log
    assert continued.state["global_step"] == step + 20
    assert continued.accuracy >= LEARNED


def relabelled_dataset(root: Path, order: list[str]) -> Path:
    """The generated classes' images with a ClassLabel in another order: label ids differ from the model's."""
    import datasets

    rng = np.random.default_rng(3)
    ids = [class_id for _ in range(16) for class_id in range(len(CLASSES))]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=order)})
    split = datasets.Dataset.from_dict(
        {"image": [class_image(i, rng, size=20) for i in ids], "label": [order.index(CLASSES[i]) for i in ids]},
        features=features,
    )
    (root / "data").mkdir(parents=True)
    for name in ("train", "test"):
        split.to_parquet(str(root / "data" / f"{name}-00000-of-00001.parquet"))
    return root


def test_eval_only_matches_labels_by_name_on_a_reordered_dataset(trained, tmp_path):
    order = [CLASSES[2], CLASSES[0], CLASSES[1]]
    model_labels = json.loads((trained.ok().out / "config.json").read_text())["id2label"]
    assert [model_labels[str(i)] for i in range(3)] != order  # the ids really disagree
    data = relabelled_dataset(tmp_path / "relabelled", order)
    out = tmp_path / "eval"
    run = cli(trained.out / "recipe.yaml", "--eval-only", "--model.pretrained", trained.out,
              "--data.dataset", data, "--data.cache_dir", tmp_path / "cache", "--training.output_dir", out,
              out=out).ok()
    assert run.accuracy >= LEARNED  # unmatched ids would score about 0 here
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))


# Host syncs ---------------------------------------------------------------------------------------------


RECIPE_PER_CLASS = 64


@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory) -> dict[str, Path]:
    """32 px data for the shipped recipes: an imagefolder, and parquet shards for the streamed ones."""
    root = tmp_path_factory.mktemp("recipe_data")
    return {
        "folder": make_imagefolder(root / "folder", per_class=RECIPE_PER_CLASS, size=32),
        "stream": make_parquet_dataset(root / "stream", shards=4, per_class=RECIPE_PER_CLASS, size=32),
    }


def shipped_recipe_args(path: Path, data: dict[str, Path], pretrained: Path, tmp_path: Path) -> list[str]:
    """The recipe's own options, on generated data, a tiny model and 40 steps.

    Only what cannot run here changes: the dataset (Hub ids), ImageNet's class subsampling, the model's
    size (or a local pretrained checkpoint for a Hub one), the resolution (32 px), the length, and
    evaluation/saves/logging (the check covers the steps between them)."""
    raw = yaml.safe_load(path.read_text())
    data_keys, model_keys = raw.get("data", {}), raw.get("model", {})
    streaming = bool(data_keys.get("streaming"))
    args = [
        "--data.dataset", data["stream" if streaming else "folder"], "--data.cache_dir", tmp_path / "cache",
        "--training.output_dir", tmp_path / "out", "--training.max_steps", "40", "--budget.time", "120s",
        "--budget.save_every", "null", "--training.logging_steps", "1000", "--training.eval_strategy", '"no"',
        "--training.save_strategy", '"no"', "--training.load_best_model_at_end", "false",
        "--training.per_device_train_batch_size", "32", "--training.per_device_eval_batch_size", "64",
        "--resume", "never",
    ]
    if streaming:
        args += ["--training.dataloader_num_workers", "2"]  # no more workers than the 4 shards
    # The eval split's size: a stream's is unknown, and the budget would keep time for 10,000 images.
    args += ["--data.max_eval_samples", str(RECIPE_PER_CLASS * len(CLASSES))]
    for key in ("classes", "max_per_class", "max_train_samples"):
        if data_keys.get(key) is not None:
            args += [f"--data.{key}", "null"]
    if float(data_keys.get("validation_size", 0)) >= 1:  # a count sized for CIFAR's 50,000 train images
        args += ["--data.validation_size", "0.2"]
    size = min(int(data_keys.get("image_size") or 32), 32)
    args += ["--data.image_size", str(size)]
    if model_keys.get("pretrained"):
        args += ["--model.pretrained", pretrained]
    else:
        args += SHRINK
        if int(model_keys.get("patch_size", 16)) > size // 4:
            args += ["--model.patch_size", str(size // 4)]
    if data_keys.get("progressive_start_size"):
        args += ["--data.progressive_start_size", str(size // 2)]
    return [str(a) for a in args]


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_no_host_sync_in_the_training_step_with_each_shipped_recipe(path, recipe_data, tiny_pretrained, tmp_path):
    args = shipped_recipe_args(path, recipe_data, tiny_pretrained, tmp_path)
    run = cli(path, *args, "--extras.check_host_syncs", "true", out=tmp_path / "out").ok()
    assert_saved(run.out)
    assert 0 <= run.accuracy <= 1
    assert run.state["global_step"] == 40, run.log[-3000:]
    checked = re.search(r"check_host_syncs: (\d+) steady training steps ran without a host sync", run.log)
    assert checked and int(checked.group(1)) >= 20, run.log[-3000:]  # the check was on for most of the 40 steps


# transformers.Trainer.compute_loss (which VitTrainer's defers to for hard labels) with a host read of the
# loss in every training step: what the check must catch.
PLANTED_SYNC = """
import runpy, sys
import transformers

original = transformers.Trainer.compute_loss

def compute_loss(self, model, inputs, *args, **kwargs):
    result = original(self, model, inputs, *args, **kwargs)
    if model.training:
        float(result[0] if isinstance(result, tuple) else result)  # a device-to-host read: a sync
    return result

transformers.Trainer.compute_loss = compute_loss
sys.argv = ["vit_hf.run", *sys.argv[1:]]
runpy.run_module("vit_hf.run", run_name="__main__", alter_sys=True)
"""


def test_a_host_sync_in_the_step_fails_the_run_only_with_the_check_on(tmp_path, images):
    recipe = write_recipe(tmp_path, images, logging_steps=1000)
    planted = [sys.executable, "-c", PLANTED_SYNC]
    unchecked = cli(recipe, "--training.output_dir", tmp_path / "unchecked", out=tmp_path / "unchecked",
                    command=planted).ok()
    assert unchecked.accuracy >= LEARNED  # the planted read changes nothing else
    checked = cli(recipe, "--extras.check_host_syncs", "true", out=tmp_path / "out", command=planted)
    assert checked.code != 0, checked.log[-3000:]
    assert "Traceback" in checked.log  # the run fails loudly, naming where the sync is
    assert "compute_loss" in checked.log
