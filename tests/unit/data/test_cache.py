"""Decode-once cache and the loaders over it: same pixels as decoding, reused across runs, every store alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.datagen import make_imagefolder
from vit_hf.data.cache import cache_uint8
from vit_hf.data.decode import decode_image
from vit_hf.data.loaders import batch_collator, choose_loader, make_store
from vit_hf.data.sources import load_splits
from vit_hf.recipe.schema import DataConfig


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = make_imagefolder(tmp_path_factory.mktemp("data"), per_class=10, size=20)
    return load_splits(DataConfig(dataset=str(root)), seed=0)


def test_cached_pixels_are_the_decoded_pixels(splits, tmp_path):
    cached = cache_uint8(splits.train, 16, 1.0, cache_dir=tmp_path)
    assert len(cached) == len(splits.train)
    pixels = cached.with_format("numpy")["pixels"]
    for i in (0, 7, len(cached) - 1):
        expected = decode_image(splits.train[i]["image"], 16, 1.0).numpy()
        np.testing.assert_array_equal(pixels[i], expected)
        assert cached[i]["label"] == splits.train[i]["label"]


def test_the_cache_is_reused_and_keyed_by_geometry(splits, tmp_path):
    cache_uint8(splits.eval, 16, 1.0, cache_dir=tmp_path)
    files = sorted(tmp_path.glob("uint8-*.arrow"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    cache_uint8(splits.eval, 16, 1.0, cache_dir=tmp_path)
    assert sorted(tmp_path.glob("uint8-*.arrow")) == files and files[0].stat().st_mtime_ns == mtime
    cache_uint8(splits.eval, 16, 0.875, cache_dir=tmp_path)
    cache_uint8(splits.eval, 12, 1.0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("uint8-*.arrow"))) == 3


@pytest.mark.parametrize("kind", ["memory", "mmap", "device"])
def test_every_store_serves_the_same_batches_through_a_dataloader(splits, tmp_path, kind):
    cached = cache_uint8(splits.train, 16, 1.0, cache_dir=tmp_path)
    store = make_store(cached, kind, torch.device("cpu"))
    reference = cached.with_format("numpy")
    indices = [5, 0, 29, 3]
    batch = store.__getitems__(indices)
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (4, 3, 16, 16)
    np.testing.assert_array_equal(batch["pixel_values"].numpy(), reference["pixels"][indices])
    assert batch["labels"].tolist() == [int(reference[i]["label"]) for i in indices]
    loader = torch.utils.data.DataLoader(store, batch_size=8, shuffle=True, collate_fn=batch_collator)
    seen = torch.cat([b["labels"] for b in loader])
    assert sorted(seen.tolist()) == sorted(int(x) for x in reference["label"])  # every example once an epoch
    assert store[3]["pixel_values"].shape == (3, 16, 16)


def test_auto_picks_what_fits():
    cpu = torch.device("cpu")
    assert choose_loader("auto", False, 10_000_000, cpu).kind == "memory"  # no accelerator here
    assert choose_loader("auto", False, 10**15, cpu).kind == "mmap"  # a petabyte fits nowhere
    assert choose_loader("auto", True, 0, cpu).kind == "decode"  # streams decode as they arrive
    assert choose_loader("mmap", False, 10, cpu).kind == "mmap"  # the recipe decides when it says
