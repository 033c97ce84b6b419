"""Streams (data.streaming): a source shaped into train and eval streams by lazy filter and map steps.

A stream cannot be scanned up front: it must declare a ClassLabel, an eval split carved out of it is
held out by a seeded hash of each image, and its length is what its split info says, if anything.
Shuffling and decoding are pipeline.py's and decode.py's.
"""

from __future__ import annotations

import hashlib
import logging
from functools import partial

import datasets
import numpy as np

from ..errors import DataError
from ..recipe.schema import DataConfig
from .splits import UNDECODED, SplitData, Splits, class_subset, features

logger = logging.getLogger(__name__)


def shape_stream(
    cfg: DataConfig,
    seed: int,
    train: SplitData | None,
    eval_: SplitData | None,
    columns: tuple[str, str],
    need_train: bool,
) -> Splits:
    names = _stream_label_names([ds for ds in (train, eval_) if ds is not None], columns[1])
    names, old_to_new = class_subset(cfg.classes, names)
    parts = {
        name: _image_and_label_stream(ds, *columns, old_to_new, names)
        for name, ds in (("train", train), ("eval", eval_))
        if ds is not None
    }
    eval_images = _stream_length(eval_, cfg.eval_split) if eval_ is not None else None
    if "eval" not in parts:
        parts["train"], parts["eval"] = _hold_out_stream(parts["train"], cfg, seed)
        train_images = _stream_length(train, cfg.train_split)
        eval_images = round(holdout_fraction(train, cfg) * train_images) if train_images else None
    if (old_to_new < 0).any():
        eval_images = None  # a class subset of a stream: how many images remain is unknown until read
    if cfg.max_eval_samples is not None:
        eval_images = min(eval_images or cfg.max_eval_samples, cfg.max_eval_samples)
    train = _head(parts["train"], cfg.max_train_samples) if need_train else None
    return Splits(train, _head(parts["eval"], cfg.max_eval_samples), names, eval_images)


def _stream_length(ds: datasets.IterableDataset, name: str | None) -> int | None:
    """The number of examples the stream's split info declares (datasets' README metadata), if any."""
    info = (ds.info.splits or {}).get(name or ds.split) if ds.info is not None else None
    return info.num_examples if info is not None and info.num_examples else None


def _stream_label_names(splits: list[datasets.IterableDataset], label: str) -> list[str]:
    """A stream cannot be scanned up front for its label values: it must declare a ClassLabel."""
    labels = [features(ds)[label] for ds in splits]
    if not isinstance(labels[0], datasets.ClassLabel):
        raise DataError(
            f"data.label_column {label!r} is {labels[0]}, not a ClassLabel: a stream cannot be scanned for its "
            "class names. Set data.streaming: false, or give the dataset a ClassLabel feature "
            "(ds.cast_column(label, ClassLabel(names=...)))"
        )
    if any(feature != labels[0] for feature in labels):
        raise DataError(f"the splits' label columns name different classes: {labels}; give them one ClassLabel")
    return list(labels[0].names)


def _image_and_label_stream(
    ds: datasets.IterableDataset, image: str, label: str, old_to_new: np.ndarray, names: list[str]
) -> datasets.IterableDataset:
    """The stream as columns `image` and `label` (relabelled, dropped classes filtered out).

    One map does the renaming: the stream's rename_column decodes every image twice (datasets 5.2).
    Undecoded from the first step on: any step that decoded would raise at the first bad image."""
    ds = ds.cast_column(image, UNDECODED)
    if (old_to_new < 0).any():
        ds = ds.filter(partial(_is_kept, old_to_new=old_to_new), input_columns=[label])
    features = datasets.Features({"image": UNDECODED, "label": datasets.ClassLabel(names=names)})
    to_row = partial(_stream_row, image=image, label=label, old_to_new=old_to_new)
    return ds.map(to_row, remove_columns=list(ds.features), features=features)


def _is_kept(label: int, old_to_new: np.ndarray) -> bool:
    return old_to_new[label] >= 0


def _stream_row(example: dict, image: str, label: str, old_to_new: np.ndarray) -> dict:
    return {"image": example[image], "label": int(old_to_new[example[label]])}


def _hold_out_stream(
    train: datasets.IterableDataset, cfg: DataConfig, seed: int
) -> tuple[datasets.IterableDataset, datasets.IterableDataset]:
    """(train, eval) from one stream, split by a seeded hash of each image (its encoded bytes, or its path).

    take/skip on a shuffled stream would leak: set_epoch reshuffles, and each data-loader worker
    skips its own share, so the skipped images differ between the train and eval loaders. A hash
    puts an image on the same side whatever the order, epoch or worker count."""
    fraction = holdout_fraction(train, cfg)
    logger.warning(
        "data: no eval split in the stream; holding out about %.1f%% of train by image hash (not stratified). "
        "Each evaluation reads the whole train stream: name a data.eval_split to avoid that",
        100 * fraction,
    )
    held_out = partial(_in_holdout, fraction=fraction, key=seed.to_bytes(8, "little", signed=True))
    return (
        train.filter(partial(held_out, negate=True), input_columns=["image"]),
        train.filter(held_out, input_columns=["image"]),
    )


def holdout_fraction(train: datasets.IterableDataset, cfg: DataConfig) -> float:
    size = cfg.validation_size
    if size < 1:
        return size
    split_info = (train.info.splits or {}).get(cfg.train_split)
    if split_info is None or not split_info.num_examples:
        raise DataError(
            f"data.validation_size={size} is a count, but the stream's length is unknown: give a fraction (< 1) "
            "or a data.eval_split"
        )
    return size / split_info.num_examples


def _in_holdout(image: dict, fraction: float, key: bytes, negate: bool = False) -> bool:
    """Whether the seeded hash of the undecoded image falls in the held-out `fraction` (xor negate).

    Hashing the file, not its pixels, needs no decoding: a bad image is held out or not like any other."""
    identity = image["bytes"] if image["bytes"] is not None else image["path"].encode()
    digest = hashlib.blake2b(identity, digest_size=8, key=key).digest()
    return (int.from_bytes(digest, "little") < fraction * 2**64) != negate


def _head(ds: datasets.IterableDataset, n: int | None) -> datasets.IterableDataset:
    """The first `n` examples of the stream (in file order; Hub shards are usually shuffled already)."""
    return ds if n is None else ds.take(n)
