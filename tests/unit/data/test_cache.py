"""Decode-once cache and the loaders over it: same pixels as decoding, reused across runs, every store alike;
built in shards on several processes, killed midway and resumed, refused when the disk lacks the room."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import torch
from filelock import FileLock

from tests.helpers import ROOT
from tests.helpers.datagen import make_imagefolder, make_imagenet_like
from vit_hf.data.cache import build_cache, cache_uint8, plan_cache, shard_images
from vit_hf.data.decode import Decoding, decode_image
from vit_hf.data.loaders import batch_collator, choose_loader, make_store
from vit_hf.data.sources import load_splits
from vit_hf.errors import DataError
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
    files = sorted(tmp_path.glob("uint8-*/shard-*.arrow"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    cache_uint8(splits.eval, 16, 1.0, cache_dir=tmp_path)
    assert sorted(tmp_path.glob("uint8-*/shard-*.arrow")) == files and files[0].stat().st_mtime_ns == mtime
    cache_uint8(splits.eval, 16, 0.875, cache_dir=tmp_path)
    cache_uint8(splits.eval, 12, 1.0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("uint8-*"))) == 3


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


# --- Shards, processes, kills ----------------------------------------------------------------------------


def test_shards_are_set_by_the_split_length_alone():
    assert shard_images(1_281_167) == 5000  # ImageNet's train split: 257 shards of 475 MB at 176 px
    assert shard_images(2000) == 128 and shard_images(30) == 30


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """600 ImageNet-like JPEGs (5 shards of 128), and their splits."""
    root = make_imagenet_like(tmp_path_factory.mktemp("photos"), per_class=200, splits=("train",))
    return root, load_splits(DataConfig(dataset=str(root), validation_size=0.01), seed=0)


def shard_files(cache_dir) -> dict[str, int]:
    """Finished shards: name -> inode (a rewritten shard is a new file)."""
    return {path.name: path.stat().st_ino for path in cache_dir.glob("uint8-*/shard-*.arrow")}


def test_a_parallel_build_makes_the_pixels_of_a_serial_one(photos, tmp_path):
    _, splits = photos
    decoding = Decoding(48, reduced=True)
    serial = build_cache(plan_cache(splits.train, decoding, tmp_path / "one"), workers=1)
    parallel = build_cache(plan_cache(splits.train, decoding, tmp_path / "two"), workers=2)
    assert len(shard_files(tmp_path / "two")) == 5 and len(parallel) == len(splits.train)
    rows = [0, 200, 400, len(serial) - 1]
    pixels = [cached.with_format("numpy")[rows]["pixels"] for cached in (serial, parallel)]
    np.testing.assert_array_equal(*pixels)
    assert parallel[rows]["label"] == splits.train[rows]["label"]
    first = splits.train[0]["image"]
    np.testing.assert_array_equal(parallel.with_format("numpy")[0]["pixels"], decoding(first).numpy())


BUILD = """
import sys
from vit_hf.data.cache import build_cache, plan_cache
from vit_hf.data.decode import Decoding
from vit_hf.data.sources import load_splits
from vit_hf.recipe.schema import DataConfig
splits = load_splits(DataConfig(dataset=sys.argv[1], validation_size=0.01), seed=0)
print("building", flush=True)
build_cache(plan_cache(splits.train, Decoding(160, reduced=True), sys.argv[2]), workers=2)
"""


def test_a_build_killed_midway_keeps_its_finished_shards_and_its_workers_die_with_it(photos, tmp_path):
    root, splits = photos
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    build = subprocess.Popen([sys.executable, "-c", BUILD, str(root), str(cache)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    assert build.stdout.readline().strip() == "building"
    deadline = time.monotonic() + 120
    while not shard_files(cache) and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = psutil.Process(build.pid).children()
    build.send_signal(signal.SIGKILL)
    build.wait()
    finished = shard_files(cache)
    assert 1 <= len(finished) < 5, "the build should have been killed midway: make the data larger"
    assert len(workers) == 2
    gone = psutil.wait_procs(workers, timeout=10)[0]  # PR_SET_PDEATHSIG: killed with their parent, not orphaned
    assert len(gone) == 2 or all(w.status() == psutil.STATUS_ZOMBIE for w in workers)

    rebuilt = build_cache(plan_cache(splits.train, Decoding(160, reduced=True), cache), workers=2)
    after = shard_files(cache)
    assert len(after) == 5 and all(after[name] == inode for name, inode in finished.items())  # not decoded again
    assert not list(cache.glob("uint8-*/tmp*"))  # the killed build's partial files are gone
    rows = [0, len(rebuilt) - 1]
    expected = [decode_image(splits.train[i]["image"], 160, reduced=True).numpy() for i in rows]
    np.testing.assert_array_equal(rebuilt.with_format("numpy")[rows]["pixels"], np.stack(expected))


BUILD_REPORTING = """
import sys
from vit_hf.data.cache import build_cache, plan_cache
from vit_hf.data.decode import Decoding
from vit_hf.data.sources import load_splits
from vit_hf.errors import RunFailed
from vit_hf.recipe.schema import DataConfig
splits = load_splits(DataConfig(dataset=sys.argv[1], validation_size=0.01), seed=0)
print("building", flush=True)
try:
    build_cache(plan_cache(splits.train, Decoding(160, reduced=True), sys.argv[2], name="train"), workers=2)
except RunFailed as error:
    print(error, flush=True)
    sys.exit(3)
"""


def test_a_decoding_process_killed_by_the_oom_killer_ends_the_build_with_a_clear_error(photos, tmp_path):
    # multiprocessing.Pool waited forever for the killed worker's shard; the build must end, saying why.
    root, _ = photos
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    build = subprocess.Popen([sys.executable, "-c", BUILD_REPORTING, str(root), str(tmp_path / "cache")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert build.stdout.readline().strip() == "building"
    deadline = time.monotonic() + 120
    while len(workers := psutil.Process(build.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    workers[0].send_signal(signal.SIGKILL)  # as the OOM killer does
    try:
        out, _ = build.communicate(timeout=120)
    finally:
        build.kill()
    assert build.returncode == 3, out
    assert "a process decoding the train split died (killed, most likely by the out-of-memory killer)" in out
    assert "rerun the same command to decode only the rest" in out


def test_a_build_that_waited_for_another_finds_every_shard_finished_and_decodes_nothing(splits, tmp_path, caplog):
    # Two builds of one cache (two runs, two nodes): the second waits on build.lock, and finds the shards the
    # first one wrote meanwhile.
    elsewhere = build_cache(plan_cache(splits.train, Decoding(16), tmp_path / "first"), workers=1)
    plan = plan_cache(splits.train, Decoding(16), tmp_path / "second")
    plan.folder.mkdir(parents=True)
    caplog.set_level(logging.INFO, logger="vit_hf.data.cache")
    with FileLock(str(plan.folder / "build.lock")):  # the first build, still writing
        waiting = ThreadPoolExecutor(1).submit(build_cache, plan, 4)
        time.sleep(1.0)  # long enough to find the shards missing and wait for the lock
        assert not waiting.done()
        for shard in plan.shards:  # the first build's shards land
            shutil.move(tmp_path / "first" / plan.folder.name / shard.path.name, shard.path)
    cached = waiting.result(timeout=60)
    assert len(cached) == len(elsewhere) == len(splits.train)
    assert "was built by another process while this one waited for it" in caplog.text
    assert "cache: decoding" not in caplog.text


def test_a_cache_the_disk_cannot_hold_is_refused_before_decoding(splits, tmp_path, monkeypatch):
    # A full disk cannot be made here: the disk's free space, as vit_hf.data.cache reads it, is made the cache's
    # size, under the 5% margin it keeps.
    plan = plan_cache(splits.train, Decoding(64), tmp_path / "cache")
    free, disk_usage = plan.bytes_to_write, shutil.disk_usage
    monkeypatch.setattr("vit_hf.data.cache.shutil.disk_usage", lambda path: disk_usage(path)._replace(free=free))
    decoded, into = [], Decoding.into
    monkeypatch.setattr(Decoding, "into", lambda self, image, out: decoded.append(image) or into(self, image, out))
    with pytest.raises(DataError, match=r"data.cache_dir: the decode-once cache needs [\d.]+ GB .* has [\d.]+ GB "
                                        r"free\. Set data.cache_dir to a disk with room.*storage_size"):
        cache_uint8(splits.train, Decoding(64), cache_dir=tmp_path / "cache", num_proc=1)
    assert decoded == []  # nothing decoded (in this process: num_proc=1)
    assert not list((tmp_path / "cache").rglob("*.arrow"))  # nothing written
