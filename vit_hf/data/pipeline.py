"""From loaded splits to what the Trainer iterates: cached uint8 stores, or decoding on the fly.

    choice = plan_loader(recipe.data, splits, image_size, args, explicit)   # the store, and its DataLoader settings
    prepared = prepare(recipe.data, splits, image_size, crop_pct, choice, args)
    build_caches(recipe.data, splits, image_size, crop_pct, args)   # --prepare-data: the caches alone, no store

Map-style splits are decoded once (cache.py) and served from the store that fits (loaders.py);
streams, and `data.loader: decode`, decode in DataLoader workers at every epoch (decode.py). The
DataLoader settings that fit the store are handed back in `choice.settings`: the training side
builds its TrainingArguments from them (nothing here changes `args`).

The two geometries (train_decoding, eval_decoding): training images are kept whole (a square, the
shorter side at data.storage_size), decoded reduced where that is faster, for the random crops made
on the device; evaluation images get the saved image processor's geometry, decoded whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
import torch

from ..recipe.schema import DataConfig
from .cache import build_cache, check_disk_space, plan_cache
from .decode import BatchDecoder, Decoding, attach_decoding, stream_decoded
from .gpu_decode import JpegPassThrough
from .loaders import LoaderChoice, LoaderRequest, choose_loader, make_store
from .stream_resume import ResumableStream

logger = logging.getLogger(__name__)

# The train split is cached (and streamed) at crop_pct 1: random crops should see the whole (square)
# image, not the evaluation's center crop.
TRAIN_CROP_PCT = 1.0


def train_decoding(cfg: DataConfig, image_size: int) -> Decoding:
    return Decoding(cfg.storage_size or image_size, TRAIN_CROP_PCT, reduced=True, max_pixels=cfg.max_image_pixels)


def eval_decoding(cfg: DataConfig, image_size: int, crop_pct: float) -> Decoding:
    return Decoding(image_size, crop_pct, reduced=False, max_pixels=cfg.max_image_pixels)


# The TrainingArguments keys a recipe may set that LoaderRequest reads.
DATALOADER_KEYS = ("num_workers", "persistent_workers", "prefetch_factor", "pin_memory")


@dataclass
class Prepared:
    train: torch.utils.data.Dataset | None
    eval: torch.utils.data.Dataset
    choice: LoaderChoice


def plan_loader(cfg: DataConfig, splits, image_size: int, args, explicit_training_keys=()) -> LoaderChoice:
    """The store for these splits (data.loader, or the first that fits) and the DataLoader settings it needs.

    Sized from the split lengths before anything is decoded: uint8 [3, S, S] per image, S the split's size."""
    streaming = decodes_as_read(cfg)
    nbytes = 0 if streaming else sum(
        len(ds) * 3 * size * size
        for ds, size in ((splits.train, cfg.storage_size or image_size), (splits.eval, image_size)) if ds is not None
    )
    request = LoaderRequest(
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_persistent_workers,
        prefetch_factor=args.dataloader_prefetch_factor,
        pin_memory=args.dataloader_pin_memory,
        explicit=frozenset(key for key in DATALOADER_KEYS if f"dataloader_{key}" in explicit_training_keys),
    )
    choice = choose_loader(cfg.loader, streaming, nbytes, args.device, request, args.world_size)
    logger.info("data: loader %s (%s); %s", choice.kind, choice.reason, _describe(choice))
    for note in choice.notes:
        logger.info("data: %s", note)
    return choice


def _describe(choice: LoaderChoice) -> str:
    s = choice.settings
    workers = f"{s.num_workers} workers" + (", persistent" if s.persistent_workers else "")
    return f"{workers}, {'pinned' if s.pin_memory else 'unpinned'} batches"


def decodes_as_read(cfg: DataConfig) -> bool:
    """Streams and data.loader: decode have no cache: each image is decoded as the loader reads it."""
    return cfg.streaming or cfg.loader == "decode"


def prepare(cfg: DataConfig, splits, image_size: int, crop_pct: float, choice: LoaderChoice, args) -> Prepared:
    """Train (when splits.train is set) and eval datasets yielding {"pixel_values": uint8, "labels"}."""
    if choice.kind == "decode":
        train_geometry = train_decoding(cfg, image_size)
        if isinstance(splits.train, datasets.IterableDataset):
            train = _training_stream(splits.train, train_geometry, cfg, args)
        else:  # map-style decoding (data.loader: decode): the Trainer's sampler shuffles
            train = _decoding(splits.train, train_geometry, cfg)
        return Prepared(train, _decoding(splits.eval, eval_decoding(cfg, image_size, crop_pct), cfg), choice)
    cached = build_caches(cfg, splits, image_size, crop_pct, args)
    stores = {name: make_store(ds, choice.kind, args.device) for name, ds in cached.items()}
    return Prepared(stores.get("train"), stores["eval"], choice)


def build_caches(cfg: DataConfig, splits, image_size: int, crop_pct: float, args) -> dict[str, datasets.Dataset]:
    """The decode-once caches of the train (when splits.train is set) and eval splits, built or reused, as
    memory-mapped datasets: nothing is copied into RAM or onto the device (the store's part, make_store), so a
    node without the training device can build them (--prepare-data)."""
    decodings = {"train": train_decoding(cfg, image_size), "eval": eval_decoding(cfg, image_size, crop_pct)}
    with args.main_process_first(desc="decode-once cache"):  # DDP: rank 0 builds, the others read
        plans = [plan_cache(ds, decodings[name], cfg.cache_dir, cfg.on_bad_image, name)
                 for name, ds in (("train", splits.train), ("eval", splits.eval)) if ds is not None]
        check_disk_space(plans)  # both splits, before either is decoded
        return {plan.name: build_cache(plan, cfg.cache_workers) for plan in plans}


def _training_stream(split: datasets.IterableDataset, decoding: Decoding, cfg: DataConfig, args):
    """A training stream in a seeded random order, decoded in the DataLoader workers: shards shuffled, then a
    buffer of data.shuffle_buffer rows.

    datasets reshuffles both for each epoch from (seed, epoch): the Trainer's set_epoch reaches the stream
    through accelerate's DataLoaderShard, and a resumed run replays the same order, from where it stopped
    (stream_resume.py; one process: in DDP accelerate dispatches a stream from rank 0). Rows are shuffled
    undecoded (their bytes), so the buffer holds compressed images."""
    decoder = _decoder_type(cfg)(decoding, cfg.on_bad_image, never_empty=False)
    decoded = stream_decoded(split.shuffle(seed=args.seed, buffer_size=cfg.shuffle_buffer), decoder)
    return ResumableStream(decoded, decoder) if args.world_size == 1 else decoded


def _decoding(split, decoding: Decoding, cfg: DataConfig):
    return None if split is None else attach_decoding(split, decoding, on_bad_image=cfg.on_bad_image,
                                                      decoder=_decoder_type(cfg))


def _decoder_type(cfg: DataConfig) -> type[BatchDecoder]:
    """data.gpu_decode: the workers read the JPEG files and the training step decodes them (gpu_decode.py)."""
    return JpegPassThrough if cfg.gpu_decode else BatchDecoder
