"""Shared fixtures. Everything is offline: nothing in the suite downloads a model, dataset or metric."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Set before transformers/datasets/huggingface_hub are imported: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `from tests.datagen import ...` in every test file

import pytest  # noqa: E402

# Fixtures shared by several test modules, found by pytest through this conftest.
from tests.hub_server import hub_server  # noqa: E402, F401  (a local Hub: see tests/hub_server.py)

SHARED_CIFAR10 = ROOT.parent / "shared" / "datasets" / "cifar10"


def tiny_vit_config(num_labels: int = 3, image_size: int = 16, patch_size: int = 4):
    from transformers import ViTConfig

    names = [f"class_{i}" for i in range(num_labels)]
    return ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=image_size,
        patch_size=patch_size,
        num_labels=num_labels,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """A random-init ViT checkpoint with an image processor, saved as a Hub repo would hold it."""
    import torch
    from transformers import ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_pretrained")
    ViTForImageClassification(tiny_vit_config()).save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """One finished run for the tests of the summary, plots, card and report: (path, trainer, monitor, metrics)."""
    from tests.test_callbacks import finished_run

    path = tmp_path_factory.mktemp("runs") / "cifar10_tiny"
    return (path, *finished_run(path))
