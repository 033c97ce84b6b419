"""From loaded splits to what the Trainer iterates: cached uint8 stores, or decoding on the fly.

    prepared = prepare(recipe.data, splits, image_size, crop_pct, args)

Map-style splits are decoded once (cache.py) and served from the store that fits (loaders.py);
streams, and `data.loader: decode`, decode in DataLoader workers at every epoch (decode.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..config import DataConfig
from .cache import cache_uint8
from .decode import attach_decoding
from .loaders import LoaderChoice, choose_loader, make_store

logger = logging.getLogger(__name__)

# The train split is cached at crop_pct 1: random crops should see the whole (square) image, not
# the evaluation's center crop.
TRAIN_CROP_PCT = 1.0


@dataclass
class Prepared:
    train: torch.utils.data.Dataset | None
    eval: torch.utils.data.Dataset
    choice: LoaderChoice


def prepare(cfg: DataConfig, splits, image_size: int, crop_pct: float, args) -> Prepared:
    """Train (when splits.train is set) and eval datasets yielding {"pixel_values": uint8, "labels"}."""
    streaming = cfg.streaming or cfg.loader == "decode"
    if streaming:
        choice = choose_loader(cfg.loader, True, 0, args.device)
        train = _decoding(splits.train, image_size, crop_pct, cfg.on_bad_image)
        return Prepared(train, _decoding(splits.eval, image_size, crop_pct, cfg.on_bad_image), choice)

    with args.main_process_first(desc="decode-once cache"):  # DDP: rank 0 builds, the others read
        train = _cached(splits.train, image_size, TRAIN_CROP_PCT, cfg)
        evaluation = _cached(splits.eval, image_size, crop_pct, cfg)
    nbytes = sum(_nbytes(ds, image_size) for ds in (train, evaluation) if ds is not None)
    choice = choose_loader(cfg.loader, False, nbytes, args.device)
    logger.info("data: loader %s (%s)", choice.kind, choice.reason)
    if choice.kind in ("device", "memory"):
        # A batch is one gather from memory: worker processes would only add copies and start-up time.
        args.dataloader_num_workers = 0
    stores = [make_store(ds, choice.kind, args.device) if ds is not None else None for ds in (train, evaluation)]
    return Prepared(stores[0], stores[1], choice)


def _decoding(split, image_size: int, crop_pct: float, on_bad_image: str):
    return None if split is None else attach_decoding(split, image_size, crop_pct, on_bad_image)


def _cached(split, image_size: int, crop_pct: float, cfg: DataConfig):
    return None if split is None else cache_uint8(split, image_size, crop_pct, cfg.cache_dir, cfg.on_bad_image)


def _nbytes(ds, image_size: int) -> int:
    return len(ds) * 3 * image_size * image_size
