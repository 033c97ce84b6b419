"""Decode once: every image decoded, converted to RGB, resized and center-cropped, stored as uint8 in Arrow
files next to the datasets cache, reused by later runs.

The standard HF recipe decodes and transforms each PIL image in Python at every epoch; a GPU trains a ViT
on thousands of images per second, more than a few CPU cores decode. After this step an epoch is a gather
from a uint8 array (loaders.py) and augmentation runs batched on the device (augment/).

    plans = [plan_cache(split, decoding, cache_dir, on_bad_image, name) for ...]   # nothing decoded yet
    check_disk_space(plans)          # the size of what is left to write, logged; DataError if it does not fit
    cached = build_cache(plan, workers)

A cache is a folder keyed by the source's datasets fingerprint, the Decoding and CACHE_VERSION, so a change
of dataset, subset, geometry or decoding code builds a new one and never reuses a stale one. It holds the
split in shards of at most SHARD_IMAGES[1] rows, each written by datasets.map in one process, all cores
at a time (pool.py). The gap filled: datasets.map(num_proc=N) cuts a split into exactly N shards that
all finish at the very end, so a build killed at 90% keeps nothing; here a killed build keeps every
finished shard, and its rerun decodes only the rest. datasets.map writes a shard to a temporary file and
renames it when complete, so a shard file is never partial; a killed build's temporary files are
removed by the next one, under a lock that also keeps two builds of one cache (two nodes, two runs) apart.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.features.features import Array3DExtensionType
from datasets.utils.tqdm import tqdm
from filelock import FileLock

from ..errors import DataError, RunFailed
from .decode import Decoding
from .pool import available_cores, decoding_pool

logger = logging.getLogger(__name__)

# Bump when decode_image's output for the same input changes. 2: resized by torch (within one level of
# version 1's Pillow resize), train images of JPEGs decoded reduced, images above max_pixels refused.
CACHE_VERSION = 2
DECODE_BATCH = 256  # rows per datasets.map batch within a shard
# A split is cut into about TARGET_SHARDS shards of SHARD_IMAGES rows (min, max): ImageNet's train split
# makes 257 shards of 5,000 (475 MB each at 176 px), 2,000 images 16 shards of 128. A killed build loses
# at most the shards in progress, one per process.
TARGET_SHARDS = 256
SHARD_IMAGES = (128, 5000)
# Free space kept beyond the estimate (the filesystem's own overhead, the files' Arrow framing).
SPACE_MARGIN = 1.05
PROGRESS_LOG_STEP = 0.1  # a log line at every 10% of a build, for logs where the progress bar does not go


def default_cache_dir() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "vit_hf"


def bytes_per_image(size: int) -> int:
    """Bytes one cached image takes: uint8 [3, S, S], plus the Arrow list offsets of datasets' Array3D
    (int32 per image, per channel and per row: 2% at 176 px)."""
    return 3 * size * size + 4 * (3 * size + 4)


@dataclass(frozen=True)
class Shard:
    start: int
    stop: int
    path: Path

    @property
    def images(self) -> int:
        return self.stop - self.start


@dataclass
class CachePlan:
    """What a split's cache is and what of it is left to build: nothing here has decoded anything."""

    ds: datasets.Dataset  # columns image (undecoded), label
    decoding: Decoding
    on_bad_image: str
    folder: Path
    shards: list[Shard]
    name: str = "split"

    @property
    def missing(self) -> list[Shard]:
        return [shard for shard in self.shards if not shard.path.is_file()]

    @property
    def bytes_to_write(self) -> int:
        return sum(shard.images for shard in self.missing) * bytes_per_image(self.decoding.size)

    @property
    def features(self) -> datasets.Features:
        size = self.decoding.size
        return datasets.Features(
            {"pixels": datasets.Array3D(shape=(3, size, size), dtype="uint8"), "label": self.ds.features["label"]}
        )


def cache_key(ds: datasets.Dataset, decoding: Decoding, on_bad_image: str) -> str:
    text = (f"{ds._fingerprint}|{decoding.size}|{decoding.crop_pct}|{decoding.reduced}|{decoding.max_pixels}|"
            f"{on_bad_image}|v{CACHE_VERSION}")
    return "uint8-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def plan_cache(
    ds: datasets.Dataset, decoding: Decoding, cache_dir: str | os.PathLike | None = None,
    on_bad_image: str = "skip", name: str = "split",
) -> CachePlan:
    folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / cache_key(ds, decoding, on_bad_image)
    size = shard_images(len(ds))
    bounds = [(start, min(start + size, len(ds))) for start in range(0, len(ds), size)]
    shards = [Shard(start, stop, folder / f"shard-{start:09d}-{stop:09d}.arrow") for start, stop in bounds]
    return CachePlan(ds, decoding, on_bad_image, folder, shards, name)


def shard_images(rows: int) -> int:
    """Rows per shard: about TARGET_SHARDS of them, within SHARD_IMAGES. Set by the split's length alone, so
    that a rerun with another number of processes finds the same shards."""
    low, high = SHARD_IMAGES
    return max(1, min(high, max(low, math.ceil(rows / TARGET_SHARDS)), rows))


def check_disk_space(plans: list[CachePlan], cache_dir_key: str = "data.cache_dir", size_key: str = "data.storage_size"
                     ) -> None:
    """Log what the caches will take, and refuse (DataError), before anything is decoded, when the disk
    holding them lacks the room."""
    needed = sum(plan.bytes_to_write for plan in plans)
    for plan in plans:
        if plan.bytes_to_write:
            logger.info("cache: %s split, %s images at %d px: %.2f GB to write (%.1f KB each) in %d shards, into %s",
                        plan.name, f"{sum(s.images for s in plan.missing):,}", plan.decoding.size,
                        plan.bytes_to_write / 1e9, bytes_per_image(plan.decoding.size) / 1e3, len(plan.missing),
                        plan.folder)
    if not needed:
        return
    folder = _existing_parent(plans[0].folder)
    free = shutil.disk_usage(folder).free
    logger.info("cache: %.2f GB to write, %.2f GB free on the disk of %s", needed / 1e9, free / 1e9, folder)
    if needed * SPACE_MARGIN > free:
        sizes = ", ".join(f"{plan.name} {plan.decoding.size} px" for plan in plans if plan.bytes_to_write)
        raise DataError(
            f"{cache_dir_key}: the decode-once cache needs {needed * SPACE_MARGIN / 1e9:.2f} GB ({sizes}, with a "
            f"{SPACE_MARGIN - 1:.0%} margin) but {folder} has {free / 1e9:.2f} GB free. Set {cache_dir_key} to a "
            f"disk with room, free space, or lower {size_key} (bytes grow with its square)"
        )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def build_cache(plan: CachePlan, workers: int | None = None) -> datasets.Dataset:
    """The split as columns pixels (uint8 [3, S, S]) and label: its missing shards decoded now, on `workers`
    processes (None: every core this process may use), the finished ones read back."""
    if plan.missing:
        plan.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(plan.folder / "build.lock")):
            _remove_partial_files(plan.folder)
            missing = plan.missing  # again, under the lock: the build this one waited for may have made them all
            if missing:
                _decode_missing(plan, missing, workers or available_cores())
            else:
                logger.info("cache: %s was built by another process while this one waited for it", plan.folder)
    else:
        logger.info("cache: reusing %s (%s %s images at %d px)", plan.folder, f"{len(plan.ds):,}", plan.name,
                    plan.decoding.size)
    cached = _read_shards(plan)
    _report_skipped(plan.name, len(plan.ds), len(cached))
    return cached


def cache_uint8(
    ds: datasets.Dataset, size: int | Decoding, crop_pct: float = 1.0, cache_dir: str | os.PathLike | None = None,
    on_bad_image: str = "skip", num_proc: int | None = None,
) -> datasets.Dataset:
    """`ds` (columns image, label) as columns pixels and label, from the cache when it holds this exact input,
    else decoded now (in parallel) and written there: plan_cache, check_disk_space and build_cache in one."""
    decoding = size if isinstance(size, Decoding) else Decoding(size, crop_pct)
    plan = plan_cache(ds, decoding, cache_dir, on_bad_image)
    check_disk_space([plan])
    return build_cache(plan, num_proc)


def _remove_partial_files(folder: Path) -> None:
    """The temporary files of a build that was killed (datasets.map writes `tmp*`, then renames it to the shard)."""
    for path in folder.glob("tmp*"):
        path.unlink(missing_ok=True)
        logger.info("cache: removed %s, left by a build that did not finish", path.name)


def _decode_missing(plan: CachePlan, missing: list[Shard], workers: int) -> None:
    done = len(plan.ds) - sum(shard.images for shard in missing)
    if done:
        logger.info("cache: %s of %s %s images already decoded by an earlier build; decoding the other %s",
                    f"{done:,}", f"{len(plan.ds):,}", plan.name, f"{len(plan.ds) - done:,}")
    tasks = [(plan.ds.select(range(s.start, s.stop)), s.path, plan.decoding, plan.on_bad_image, plan.features)
             for s in missing]
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        with _Progress(plan, done, workers) as progress:
            for task in tasks:
                progress.advance(_build_shard(task))
        return
    with decoding_pool(workers) as pool:
        futures = [pool.submit(_build_shard, task) for task in tasks]  # the workers start here (fork: at the first)
        # The bar only now: tqdm's monitor thread takes a lock, and a fork while it holds it would leave the
        # child waiting on that lock forever.
        with _Progress(plan, done, workers) as progress:
            for images in _shard_results(futures, plan):
                progress.advance(images)


def _shard_results(futures: list[Future], plan: CachePlan) -> Iterator[int]:
    """The images of each shard as it finishes; a decoding process that died (the OOM killer's SIGKILL) is a
    RunFailed that says so, not a wait for a shard that will never come."""
    try:
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool:
        raise RunFailed(
            f"cache: a process decoding the {plan.name} split died (killed, most likely by the out-of-memory killer). "
            f"The finished shards are kept in {plan.folder}: rerun the same command to decode only the rest, with "
            "fewer processes (data.cache_workers) if memory is short"
        ) from None


def _build_shard(task) -> int:
    """In a decoding process: one shard decoded and written by datasets.map (temporary file, then renamed)."""
    shard, path, decoding, on_bad_image, features = task
    shard.map(
        _decode_rows,
        batched=True,
        batch_size=DECODE_BATCH,
        remove_columns=["image"],
        features=features,
        fn_kwargs={"decoding": decoding, "on_bad_image": on_bad_image},
        cache_file_name=str(path),
        new_fingerprint=f"{path.parent.name}-{path.stem}",
        load_from_cache_file=True,
        desc=None,
    )
    return len(shard)


def _decode_rows(batch: dict, decoding: Decoding, on_bad_image: str) -> pa.Table:
    """Batched map: decoded pixels for the good images; bad ones dropped (skip) or an error (raise)."""
    pixels = np.empty((len(batch["image"]), 3, decoding.size, decoding.size), np.uint8)
    labels = []
    for image, label in zip(batch["image"], batch["label"]):
        try:
            decoding.into(image, torch.from_numpy(pixels[len(labels)]))
        except DataError:
            if on_bad_image == "raise":
                raise
            logger.warning("skipping an image that cannot be decoded: %s", _name_of(image))
            continue
        labels.append(label)
    return pa.table({"pixels": _array3d(pixels[:len(labels)]), "label": pa.array(labels, pa.int64())})


def _array3d(pixels: np.ndarray) -> pa.ExtensionArray:
    """uint8 [B, C, H, W] as datasets' Array3D column, on the batch's own buffer.

    The gap filled: datasets converts a numpy batch by flattening it and building the lists from the copy
    (features.numpy_to_pyarrow_listarray; 0.08 ms an image at 176 px here, a quarter of the write). Array3D's
    storage is three levels of list offsets (int32) over the values: built here without copying them."""
    batch, channels, height, width = pixels.shape
    values = pa.array(pixels.reshape(-1))  # a view of a contiguous array: zero-copy
    for count, step in ((batch * channels * height, width), (batch * channels, height), (batch, channels)):
        values = pa.ListArray.from_arrays(pa.array(np.arange(0, count * step + 1, step, dtype=np.int32)), values)
    return pa.ExtensionArray.from_storage(Array3DExtensionType((channels, height, width), "uint8"), values)


def _read_shards(plan: CachePlan) -> datasets.Dataset:
    """The finished shards, memory-mapped, as one dataset (no copy)."""
    info = datasets.DatasetInfo(features=plan.features)
    parts = [datasets.Dataset.from_file(str(shard.path), info=info) for shard in plan.shards]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


class _Progress:
    """One progress bar for a whole build (images/s and time left), and a log line every PROGRESS_LOG_STEP; as
    a context manager, the bar closed however the build ends, and the summary logged when it succeeded."""

    def __init__(self, plan: CachePlan, done: int, workers: int):
        self.plan, self.total, self.workers = plan, len(plan.ds), workers
        self.start_done, self.done, self.started = done, done, time.monotonic()
        self.next_log = done / self.total + PROGRESS_LOG_STEP
        self.bar = tqdm(total=self.total, initial=done, unit="img", dynamic_ncols=True,
                        desc=f"decode-once cache, {plan.name} {plan.decoding.size}px ({workers} processes)")
        logger.info("cache: decoding %s %s images at %d px on %d processes", f"{self.total - done:,}", plan.name,
                    plan.decoding.size, workers)

    def advance(self, images: int) -> None:
        self.done += images
        self.bar.update(images)
        if self.done / self.total >= self.next_log and self.done < self.total:
            self.next_log += PROGRESS_LOG_STEP
            rate = self.rate()
            logger.info("cache: %.0f%% of the %s split, %.0f img/s, %.0f s left", 100 * self.done / self.total,
                        self.plan.name, rate, (self.total - self.done) / max(rate, 1e-9))

    def rate(self) -> float:
        return (self.done - self.start_done) / max(time.monotonic() - self.started, 1e-9)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        self.bar.close()
        if error_type is None:
            self.log_summary()

    def log_summary(self) -> None:
        seconds = time.monotonic() - self.started
        logger.info("cache: decoded %s %s images in %.1f s: %.0f img/s on %d processes (%.0f per process)",
                    f"{self.done - self.start_done:,}", self.plan.name, seconds, self.rate(), self.workers,
                    self.rate() / self.workers)


def _name_of(image) -> str:
    if isinstance(image, dict):
        return str(image.get("path") or "<bytes>")
    return str(getattr(image, "filename", "") or "<image>")


def _report_skipped(name: str, before: int, after: int) -> None:
    if after < before:
        logger.warning("cache: skipped %d of %d %s images that could not be decoded", before - after, before, name)
    if after == 0:
        raise DataError("no image of the split could be decoded; check data.dataset and data.image_column")
