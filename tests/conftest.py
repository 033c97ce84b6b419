"""Shared fixtures. Everything is offline: nothing in the suite downloads a model, dataset or metric.

The tests mirror the package: tests/unit/<subpackage>/ for each part of vit_hf (some of them drive the
real CLI on tiny data), tests/e2e/ for whole runs through the real CLI (marked slow here, by folder),
tests/helpers/ for what they share. `./run.sh test` runs everything; `./run.sh test-fast` the rest.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Set before transformers/datasets/huggingface_hub/evaluate are imported: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# evaluate copies each metric module it loads into HF_MODULES_CACHE (and makes folders in HF_METRICS_CACHE):
# a fresh cache per session, so the suite loads vit_hf's metrics as a new machine would, and leaves the
# user's cache alone.
_EVALUATE_CACHE = tempfile.mkdtemp(prefix="vit_hf_tests_evaluate_")
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(_EVALUATE_CACHE, "modules"))
os.environ.setdefault("HF_METRICS_CACHE", os.path.join(_EVALUATE_CACHE, "metrics"))
atexit.register(shutil.rmtree, _EVALUATE_CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `from tests.helpers.datagen import ...` in every test file

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import ViTForImageClassification, ViTImageProcessor  # noqa: E402

# Fixtures shared by several test modules, found by pytest through this conftest.
from tests.helpers.hub_server import hub_server  # noqa: E402, F401  (a local Hub: see tests/helpers/hub_server.py)
from tests.helpers.models import tiny_vit_config  # noqa: E402
from tests.helpers.trainers import finished_run  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Every test under tests/e2e/ is slow: whole runs through the real CLI."""
    e2e = ROOT / "tests" / "e2e"
    for item in items:
        if e2e in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """A random-init ViT checkpoint with an image processor, saved as a Hub repo would hold it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_pretrained")
    ViTForImageClassification(tiny_vit_config()).save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """One finished run for the tests of the summary, plots, card and report: (path, trainer, monitor, metrics)."""
    path = tmp_path_factory.mktemp("runs") / "cifar10_tiny"
    return (path, *finished_run(path))
