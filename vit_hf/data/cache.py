"""Decode once: every image decoded, converted to RGB, resized and center-cropped to the training
resolution, stored as uint8 in an Arrow file next to the datasets cache, reused by later runs.

The standard HF recipe decodes and transforms each PIL image in Python at every epoch; at 32 px a
GPU trains a ViT-Tiny on tens of thousands of images per second, far more than a few CPU cores
decode. After this step an epoch is a gather from a uint8 array (loaders.py) and augmentation runs
batched on the device (augment.py).

The cache is keyed by the source's datasets fingerprint, the geometry and CACHE_VERSION, so a change
of dataset, subset, resolution or decoding code builds a new one and never reuses a stale one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import partial
from pathlib import Path

import datasets
import numpy as np

from ..errors import DataError
from .decode import decode_image

logger = logging.getLogger(__name__)

# Bump when decode_image's output for the same input changes.
CACHE_VERSION = 1
DECODE_BATCH = 256


def default_cache_dir() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "vit_hf"


def cache_uint8(
    ds: datasets.Dataset,
    size: int,
    crop_pct: float,
    cache_dir: str | os.PathLike | None = None,
    on_bad_image: str = "skip",
    num_proc: int | None = None,
) -> datasets.Dataset:
    """`ds` (columns image, label) as columns pixels (uint8 [3, size, size]) and label, from the cache
    when it holds this exact input, else decoded now (in parallel) and written there."""
    key = cache_key(ds, size, crop_pct, on_bad_image)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.arrow"
    features = datasets.Features(
        {"pixels": datasets.Array3D(shape=(3, size, size), dtype="uint8"), "label": ds.features["label"]}
    )
    if path.is_file():
        logger.info("cache: reusing %s (%d images at %d px)", path, len(ds), size)
    cached = ds.map(
        partial(_decode_rows, size=size, crop_pct=crop_pct, on_bad_image=on_bad_image),
        batched=True,
        batch_size=DECODE_BATCH,
        remove_columns=["image"],
        features=features,
        num_proc=_workers(num_proc, len(ds)),
        cache_file_name=str(path),
        new_fingerprint=key,
        load_from_cache_file=True,
        desc=f"decoding once to uint8 {size}px",
    )
    _report_skipped(len(ds), len(cached))
    return cached


def cache_key(ds: datasets.Dataset, size: int, crop_pct: float, on_bad_image: str) -> str:
    text = f"{ds._fingerprint}|{size}|{crop_pct}|{on_bad_image}|v{CACHE_VERSION}"
    return "uint8-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _workers(num_proc: int | None, rows: int) -> int | None:
    """Parallel decoding pays for itself past a few thousand images (process start-up costs ~1 s)."""
    if num_proc is not None:
        return num_proc if num_proc > 1 else None
    cores = os.cpu_count() or 1
    return min(cores, 16) if rows >= 4 * DECODE_BATCH * max(cores, 1) and cores > 1 else None


def _decode_rows(batch: dict, size: int, crop_pct: float, on_bad_image: str) -> dict:
    """Batched map: decoded pixels for the good images; bad ones dropped (skip) or an error (raise)."""
    pixels, labels = [], []
    for image, label in zip(batch["image"], batch["label"]):
        try:
            pixels.append(decode_image(image, size, crop_pct).numpy())
        except DataError:
            if on_bad_image == "raise":
                raise
            logger.warning("skipping an image that cannot be decoded: %s", _name_of(image))
            continue
        labels.append(label)
    empty = np.zeros((0, 3, size, size), np.uint8)
    return {"pixels": np.stack(pixels) if pixels else empty, "label": labels}


def _name_of(image) -> str:
    if isinstance(image, dict):
        return str(image.get("path") or "<bytes>")
    return str(getattr(image, "filename", "") or "<image>")


def _report_skipped(before: int, after: int) -> None:
    if after < before:
        logger.warning("cache: skipped %d of %d images that could not be decoded", before - after, before)
    if after == 0:
        raise DataError("no image of the split could be decoded; check data.dataset and data.image_column")
