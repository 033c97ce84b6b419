"""From loaded splits to what the Trainer iterates: cached uint8 stores, or decoding on the fly.

    choice = plan_loader(recipe.data, splits, image_size, args, explicit)   # the store, and its DataLoader settings
    prepared = prepare(recipe.data, splits, image_size, crop_pct, choice, args)

Map-style splits are decoded once (cache.py) and served from the store that fits (loaders.py);
streams, and `data.loader: decode`, decode in DataLoader workers at every epoch (decode.py). The
DataLoader settings that fit the store are handed back in `choice.settings`: the training side
builds its TrainingArguments from them (nothing here changes `args`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
import torch

from ..recipe.schema import DataConfig
from .cache import cache_uint8
from .decode import attach_decoding
from .loaders import LoaderChoice, LoaderRequest, choose_loader, make_store

logger = logging.getLogger(__name__)

# The train split is cached (and streamed) at crop_pct 1: random crops should see the whole (square)
# image, not the evaluation's center crop.
TRAIN_CROP_PCT = 1.0
# The TrainingArguments keys a recipe may set that LoaderRequest reads.
DATALOADER_KEYS = ("num_workers", "persistent_workers", "prefetch_factor", "pin_memory")


@dataclass
class Prepared:
    train: torch.utils.data.Dataset | None
    eval: torch.utils.data.Dataset
    choice: LoaderChoice


def plan_loader(cfg: DataConfig, splits, image_size: int, args, explicit_training_keys=()) -> LoaderChoice:
    """The store for these splits (data.loader, or the first that fits) and the DataLoader settings it needs.

    Sized from the split lengths before anything is decoded: uint8 [3, S, S] per image."""
    streaming = cfg.streaming or cfg.loader == "decode"
    n_images = 0 if streaming else sum(len(ds) for ds in (splits.train, splits.eval) if ds is not None)
    request = LoaderRequest(
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_persistent_workers,
        prefetch_factor=args.dataloader_prefetch_factor,
        pin_memory=args.dataloader_pin_memory,
        explicit=frozenset(key for key in DATALOADER_KEYS if f"dataloader_{key}" in explicit_training_keys),
    )
    choice = choose_loader(cfg.loader, streaming, n_images * 3 * image_size * image_size, args.device, request,
                           args.world_size)
    logger.info("data: loader %s (%s); %s", choice.kind, choice.reason, _describe(choice))
    for note in choice.notes:
        logger.info("data: %s", note)
    return choice


def _describe(choice: LoaderChoice) -> str:
    s = choice.settings
    workers = f"{s.num_workers} workers" + (", persistent" if s.persistent_workers else "")
    return f"{workers}, {'pinned' if s.pin_memory else 'unpinned'} batches"


def prepare(cfg: DataConfig, splits, image_size: int, crop_pct: float, choice: LoaderChoice, args) -> Prepared:
    """Train (when splits.train is set) and eval datasets yielding {"pixel_values": uint8, "labels"}."""
    if choice.kind == "decode":
        train = _decoding(_shuffled_stream(splits.train, cfg, args.seed), image_size, TRAIN_CROP_PCT, cfg.on_bad_image)
        return Prepared(train, _decoding(splits.eval, image_size, crop_pct, cfg.on_bad_image), choice)

    with args.main_process_first(desc="decode-once cache"):  # DDP: rank 0 builds, the others read
        train = _cached(splits.train, image_size, TRAIN_CROP_PCT, cfg)
        evaluation = _cached(splits.eval, image_size, crop_pct, cfg)
    stores = [make_store(ds, choice.kind, args.device) if ds is not None else None for ds in (train, evaluation)]
    return Prepared(stores[0], stores[1], choice)


def _shuffled_stream(split, cfg: DataConfig, seed: int):
    """A training stream in a seeded random order: shards shuffled, then a buffer of data.shuffle_buffer rows.

    datasets reshuffles both for each epoch from (seed, epoch): the Trainer's set_epoch reaches the stream
    through accelerate's DataLoaderShard, and a resumed run replays the same order. Rows are shuffled
    undecoded (their bytes), so the buffer holds compressed images."""
    if not isinstance(split, datasets.IterableDataset):
        return split  # map-style decoding (data.loader: decode): the Trainer's sampler shuffles
    return split.shuffle(seed=seed, buffer_size=cfg.shuffle_buffer)


def _decoding(split, image_size: int, crop_pct: float, on_bad_image: str):
    return None if split is None else attach_decoding(split, image_size, crop_pct, on_bad_image)


def _cached(split, image_size: int, crop_pct: float, cfg: DataConfig):
    return None if split is None else cache_uint8(split, image_size, crop_pct, cfg.cache_dir, cfg.on_bad_image)
