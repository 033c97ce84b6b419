"""The ImageNet recipe's data path through the real CLI, on 2,000 generated ImageNet-like JPEGs (300-800 px,
~95 KB): its cache build killed with SIGKILL half way, the same command rerun: the finished shards are kept
and not decoded again, the killed build's workers died with it, the cache holds the right pixels, and
training starts. The model is shrunk (a CPU trains ViT-S/16 at 224 px at a few images/s); the data
settings are the recipe's (storage_size 176, crops of 128-224 px from it, RandAugment, Mixup)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.helpers import ROOT
from tests.helpers.datagen import make_imagenet_like
from vit_hf.data.cache import build_cache, plan_cache
from vit_hf.data.pipeline import train_decoding
from vit_hf.data.sources import load_splits
from vit_hf.recipe.load import load_recipe

RECIPE = ROOT / "recipes" / "imagenet1k_vit_s16_24h.yaml"
CLASSES = tuple(f"n0{i:07d}" for i in range(10))
TRAIN_SHARDS = 16  # 2,000 images in shards of 128 (vit_hf.data.cache.shard_images)
SHRINK = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "2",
          "--model.intermediate_size", "64"]


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> Path:
    """train/<class>/<n>.JPEG (2,000) and validation/<class>/<n>.JPEG (50), as ImageNet's imagefolder."""
    return make_imagenet_like(tmp_path_factory.mktemp("imagenet_like"), classes=CLASSES, per_class=200,
                              eval_per_class=5)


def command(data: Path, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "vit_hf.run", str(RECIPE), "--data.dataset", str(data),
            "--data.cache_dir", str(tmp_path / "cache"), "--training.output_dir", str(tmp_path / "out"), *SHRINK,
            "--training.max_steps", "2", "--budget.time", "null", "--training.per_device_train_batch_size", "16",
            "--training.per_device_eval_batch_size", "50", "--training.eval_strategy", "no",
            "--training.save_strategy", "no", "--training.report_to", "none", "--resume", "never"]


def shards(tmp_path: Path) -> dict[str, int]:
    """Finished cache shards: path -> inode (a shard decoded again would be a new file)."""
    return {str(path.relative_to(tmp_path)): path.stat().st_ino for path in tmp_path.glob("cache/uint8-*/shard-*")}


def test_a_cache_build_killed_half_way_resumes_with_its_finished_shards_and_training_starts(imagenet_like, tmp_path):
    log = (tmp_path / "killed.log").open("w")
    killed = subprocess.Popen(command(imagenet_like, tmp_path), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while len(shards(tmp_path)) < TRAIN_SHARDS // 2 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = psutil.Process(killed.pid).children(recursive=True)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    finished = shards(tmp_path)
    assert TRAIN_SHARDS // 2 <= len(finished) < TRAIN_SHARDS, (tmp_path / "killed.log").read_text()[-3000:]
    assert workers, "the build should have run on a pool of processes"
    alive = psutil.wait_procs(workers, timeout=10)[1]  # PR_SET_PDEATHSIG: they died with their parent
    assert all(process.status() == psutil.STATUS_ZOMBIE for process in alive)

    rerun = subprocess.run(command(imagenet_like, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300)
    (tmp_path / "rerun.log").write_text(rerun.stdout + rerun.stderr)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert f"{128 * len(finished):,} of 2,000 train images already decoded by an earlier build" in log
    after = shards(tmp_path)
    assert len(after) == TRAIN_SHARDS + 1  # and the validation split's one
    assert all(after[name] == inode for name, inode in finished.items())  # kept, not decoded again
    assert not list(tmp_path.glob("cache/uint8-*/tmp*"))  # the killed build's partial shards removed
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == 2
    assert 0 <= json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_accuracy"] <= 1

    # The cache holds what decoding the files gives, at the recipe's storage size.
    data = load_recipe(RECIPE, ["--data.dataset", str(imagenet_like)]).data
    train = load_splits(data, seed=0).train
    cached = build_cache(plan_cache(train, train_decoding(data, 224), tmp_path / "cache"))  # all shards: no decoding
    rows = [0, 999, 1999]
    expected = np.stack([train_decoding(data, 224)(train[i]["image"]).numpy() for i in rows])
    np.testing.assert_array_equal(cached.with_format("numpy")[rows]["pixels"], expected)
    assert cached.with_format("numpy")[rows]["pixels"].shape == (3, 3, 176, 176)
