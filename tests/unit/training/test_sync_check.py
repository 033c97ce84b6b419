"""extras.check_host_syncs: a host read planted in the step fails the run, and every shipped recipe's
options train through steady steps without one (on a CPU, the reads that would sync a GPU)."""

from __future__ import annotations

import pytest
import torch

import vit_hf.training.train
from tests.helpers import ROOT
from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.training.sync_check import HostReadDetector, HostSyncError

# Small enough for a few seconds per run on 2 cores; what a recipe chooses beyond size is kept.
TINY = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "2",
        "--model.intermediate_size", "64"]
STEADY = ["--training.max_steps", "8", "--training.logging_steps", "1000", "--training.eval_strategy", "no",
          "--training.save_strategy", "no", "--training.per_device_train_batch_size", "8",
          "--training.per_device_eval_batch_size", "16", "--budget.time", "null", "--resume", "never",
          "--extras.check_host_syncs", "true"]
FROM_SCRATCH = ["cifar10_tiny", "cifar10_hybrid", "cifar10_cpu_10m", "cifar100_small", "demo_digits", "imagenet_subset",
                "imagenet1k_vit_s16_24h"]
# Each recipe at a size its patch (or stem stride) divides; the ImageNet ones keep their ops, not their pixels.
IMAGE_SIZE = {"cifar10_tiny": 32, "cifar10_hybrid": 32, "cifar10_cpu_10m": 32, "cifar100_small": 32, "demo_digits": 16,
              "imagenet_subset": 32, "imagenet1k_vit_s16_24h": 64}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("images"), per_class=8, size=32)


def test_the_detector_raises_at_each_read_that_would_sync_a_gpu():
    x = torch.ones(2)
    for read in (lambda: x.sum().item(), x.tolist, lambda: bool(x[0]), lambda: float(x[0]), lambda: int(x[0])):
        with HostReadDetector(), pytest.raises(HostSyncError):
            read()
    with HostReadDetector():
        assert x.numpy().sum() == 2  # host memory, read on purpose: never a sync


def test_a_host_read_planted_in_the_forward_fails_the_run(tmp_path, monkeypatch, capsys):
    build = vit_hf.training.train.build_model

    def build_with_a_read(*args, **kwargs):
        model = build(*args, **kwargs)
        model.classifier.register_forward_hook(lambda module, inputs, logits: logits.sum().item() and None)
        return model

    data = make_imagefolder(tmp_path / "data", per_class=4, size=16)
    recipe = write_recipe(tmp_path, tiny_recipe(data, tmp_path / "out", max_steps=6, logging_steps=1000,
                                                eval_strategy="no", save_strategy="no"))
    assert main([str(recipe)]) == 0  # off by default
    monkeypatch.setattr(vit_hf.training.train, "build_model", build_with_a_read)
    with pytest.raises(HostSyncError, match=r"Tensor.item\(\) inside a steady training step"):
        main([str(recipe), "--extras.check_host_syncs", "true", "--training.output_dir", str(tmp_path / "on")])
    with HostReadDetector():
        pass  # the check is off again after the failed run: this thread's tensors read as usual
    assert torch.ones(1).item() == 1


@pytest.mark.parametrize("name", FROM_SCRATCH)
def test_each_shipped_recipes_steady_step_has_no_host_sync(name, images, tmp_path, caplog):
    size = str(IMAGE_SIZE[name])
    overrides = ["--data.dataset", str(images), "--data.image_size", size, "--training.output_dir",
                 str(tmp_path / "out"), "--data.classes", "null", "--data.max_per_class", "null"]
    if name.startswith("imagenet"):
        overrides += ["--data.streaming", "false", "--data.progressive_start_size", "null" if name ==
                      "imagenet_subset" else "32"]
    with caplog.at_level("INFO", logger="vit_hf.training.sync_check"):
        assert main([str(ROOT / "recipes" / f"{name}.yaml"), *TINY, *STEADY, *overrides]) == 0
    # Steps 4..8 checked: the check starts at the end of step 3.
    assert "5 steady training steps ran without a host sync" in caplog.text
