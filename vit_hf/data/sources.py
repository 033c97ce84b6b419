"""Load the recipe's dataset and shape it into a train and an eval split of (image, label).

    splits = load_splits(recipe.data, seed)      # Splits(train, eval, label_names)

Whatever the source (Hub id, parquet/arrow files, imagefolder, save_to_disk folder) and its column
names, both splits come out with exactly two columns: `image` (datasets.Image(decode=False): items
are {"bytes", "path"}, which decode.decode_image decodes, skipping or naming bad files) and `label`
(ClassLabel named `label_names`, the same in both splits). Nothing here decodes an image:
map-style subsets are index lists (`select`), computed from the label column alone, so cutting
ImageNet down to 100 classes takes seconds. Streams (data.streaming) get the same two columns
through lazy filter/map steps; they must declare a ClassLabel, since they cannot be scanned first.
Pixels are decode.py's job.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import numpy as np

from ..errors import DataError
from ..recipe.schema import DataConfig
from .splits import UNDECODED, SplitData, Splits, class_subset, features
from .streaming import shape_stream

logger = logging.getLogger(__name__)

EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")
# data.eval_split value that carves the eval split out of train even when the dataset has one: tuning
# (a search, a recipe's choices) without looking at the test split, as big_vision's minival does.
HOLDOUT = "holdout"


IMAGE_COLUMN_NAMES = ("image", "img")


LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class")


ACCEPTED_LAYOUTS = (
    "a Hub dataset id (uoft-cs/cifar10), or a local folder holding parquet or arrow files "
    "(data/train-00000-of-00001.parquet), an imagefolder (train/<class>/<image> or <class>/<image>), "
    "or the output of save_to_disk"
)


# A save_to_disk folder streamed: shards let data-loader workers share the reading (workers beyond
# num_shards sit idle), and 64 covers the CPU count of one GPU node.
SAVED_STREAM_SHARDS = 64


def load_splits(cfg: DataConfig, seed: int, need_train: bool = True) -> Splits:
    """The train and eval splits as the recipe's data section describes them (see DataConfig's help)."""
    if cfg.streaming and cfg.max_per_class is not None:
        raise DataError(
            f"data.max_per_class={cfg.max_per_class} needs a map-style dataset; set data.streaming: false "
            "or use data.max_train_samples, which streams"
        )
    train, eval_ = _pick_splits(cfg, _open_dataset(cfg), need_train)
    columns = _pick_columns(cfg, [ds for ds in (train, eval_) if ds is not None])
    shape = shape_stream if cfg.streaming else _shape_map_style
    splits = shape(cfg, seed, train, eval_, columns, need_train)
    _log_summary(splits)
    if isinstance(splits.train, datasets.Dataset):
        _warn_untrained_classes(splits)
    return splits


def _open_dataset(cfg: DataConfig) -> dict[str, SplitData]:
    """Every split of the source, by name: map-style, or streamed when cfg.streaming."""
    if cfg.dataset is None:
        raise DataError(f"data.dataset is required: {ACCEPTED_LAYOUTS}")
    path = Path(cfg.dataset).expanduser()
    if _is_saved_dataset(path):
        return _open_saved(path, cfg.streaming)
    if not path.exists() and _looks_like_path(cfg.dataset):
        raise DataError(f"data.dataset: {cfg.dataset} does not exist. Give {ACCEPTED_LAYOUTS}")
    try:
        return dict(datasets.load_dataset(cfg.dataset, cfg.config, streaming=cfg.streaming))
    except Exception as exc:  # offline, unknown ids and bad layouts surface as many exception types
        raise DataError(
            f"data.dataset: could not load {cfg.dataset!r} (config {cfg.config!r}): {exc}. "
            f"Give {ACCEPTED_LAYOUTS}"
        ) from exc


def _is_saved_dataset(path: Path) -> bool:
    """A save_to_disk folder, which load_dataset refuses (a single Dataset) or misreads: load_from_disk reads it."""
    single = (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    return single or (path / "dataset_dict.json").is_file()


def _open_saved(path: Path, streaming: bool) -> dict[str, SplitData]:
    saved = datasets.load_from_disk(str(path))
    # A lone Dataset has no split name; it is the one to train on.
    splits = dict(saved) if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    if streaming:
        splits = {name: ds.to_iterable_dataset(num_shards=_stream_shards(ds)) for name, ds in splits.items()}
    return splits


def _stream_shards(ds: datasets.Dataset) -> int:
    return max(1, min(SAVED_STREAM_SHARDS, len(ds)))


def _looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else that does not exist is a missing local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _pick_splits(
    cfg: DataConfig, available: dict[str, SplitData], need_train: bool
) -> tuple[SplitData | None, SplitData | None]:
    """(train, eval); eval is None when it is to be carved out of train. train is None when not needed."""
    if cfg.eval_split == HOLDOUT:
        if cfg.train_split not in available:
            raise DataError(f"data.train_split: no split {cfg.train_split!r}; the dataset has {sorted(available)}")
        return available[cfg.train_split], None
    eval_name = cfg.eval_split or next(
        (name for name in EVAL_SPLIT_NAMES if name in available and name != cfg.train_split), None
    )
    if eval_name is not None and eval_name not in available:
        raise DataError(f"data.eval_split: no split {eval_name!r}; the dataset has {sorted(available)}")
    if cfg.train_split not in available and (need_train or eval_name is None):
        raise DataError(
            f"data.train_split: no split {cfg.train_split!r}; the dataset has {sorted(available)}"
            + ("" if eval_name else " (and no eval split to fall back on: set data.eval_split)")
        )
    train = available.get(cfg.train_split) if need_train or eval_name is None else None
    return train, available[eval_name] if eval_name else None


def _pick_columns(cfg: DataConfig, splits: list[SplitData]) -> tuple[str, str]:
    """(image column, label column), as the recipe names them or found by name and feature type."""
    first = features(splits[0])
    image = cfg.image_column or _detect_column(
        first, IMAGE_COLUMN_NAMES, datasets.Image, "data.image_column", "an Image feature"
    )
    label = cfg.label_column or _detect_column(
        first, LABEL_COLUMN_NAMES, datasets.ClassLabel, "data.label_column", "a ClassLabel feature"
    )
    for ds in splits:
        for key, column in (("data.image_column", image), ("data.label_column", label)):
            if column not in features(ds):
                columns = list(features(ds))
                raise DataError(f"{key}: no column {column!r} in split {ds.split}; its columns are {columns}")
    return image, label


def _detect_column(features: datasets.Features, names: tuple[str, ...], kind: type, key: str, kind_text: str) -> str:
    """The first of `names` present, else the only column of type `kind`."""
    found = next((name for name in names if name in features), None)
    of_kind = [name for name, feature in features.items() if isinstance(feature, kind)]
    if found is None and len(of_kind) == 1:
        found = of_kind[0]
    if found is None:
        raise DataError(
            f"{key}: none of the columns {list(features)} is named {' or '.join(names)}, and "
            f"{len(of_kind)} of them hold {kind_text} (auto-detection needs exactly one). Set {key}"
        )
    return found


def _log_summary(splits: Splits) -> None:
    sizes = [_size_text(ds) for ds in (splits.train, splits.eval)]
    logger.info("data: train %s, eval %s, %d classes", *sizes, len(splits.label_names))


# Untrained classes named in the warning; the rest are counted.
NAMED_CLASSES = 10


def _warn_untrained_classes(splits: Splits) -> None:
    """A class the model is scored on but never sees in training (a subset, a folder left empty, a cap):
    the run trains on, but its accuracy on that class can only be chance."""
    classes = len(splits.label_names)
    trained = np.bincount(_label_array(splits.train), minlength=classes)
    scored = np.bincount(_label_array(splits.eval), minlength=classes)
    untrained = [splits.label_names[i] for i in np.flatnonzero((trained == 0) & (scored > 0))]
    if untrained:
        named = ", ".join(map(repr, untrained[:NAMED_CLASSES]))
        more = f" and {len(untrained) - NAMED_CLASSES} more" if len(untrained) > NAMED_CLASSES else ""
        logger.warning("data: %d classes have eval images but no training images: %s%s. Their eval images can "
                       "only be guessed; check data.dataset, data.max_per_class and data.max_train_samples",
                       len(untrained), named, more)


def _size_text(ds: SplitData | None) -> str:
    if ds is None:
        return "not loaded"
    return f"{len(ds)} images" if isinstance(ds, datasets.Dataset) else "streamed"


def _shape_map_style(
    cfg: DataConfig,
    seed: int,
    train: SplitData | None,
    eval_: SplitData | None,
    columns: tuple[str, str],
    need_train: bool,
) -> Splits:
    parts = {name: _image_and_label(ds, *columns) for name, ds in (("train", train), ("eval", eval_)) if ds is not None}
    names, ids = _encode_labels(parts)
    names, old_to_new = class_subset(cfg.classes, names)
    parts = {name: _relabel(ds, old_to_new[ids[name]], names) for name, ds in parts.items()}
    if "eval" not in parts:
        parts["train"], parts["eval"] = _carve_eval(parts["train"], cfg.validation_size, seed)
    train = _cap_train(parts["train"], cfg, seed) if need_train else None
    return Splits(train, _shuffled_head(parts["eval"], cfg.max_eval_samples, seed), names)


def _image_and_label(ds: datasets.Dataset, image: str, label: str) -> datasets.Dataset:
    """Exactly the columns `image` (undecoded) and `label`; renaming, dropping and casting an Image
    feature to its undecoded form do not copy data."""
    ds = ds.select_columns([image, label]).rename_columns({image: "image", label: "label"})
    return ds.cast_column("image", UNDECODED)


def _label_array(ds: datasets.Dataset) -> np.ndarray:
    """The label column as numpy, read from Arrow without touching the images."""
    return ds.select_columns(["label"]).with_format("arrow")[:]["label"].to_numpy(zero_copy_only=False)


def _encode_labels(parts: dict[str, datasets.Dataset]) -> tuple[list[str], dict[str, np.ndarray]]:
    """(label names, label ids per split), the same names for every split."""
    raw = {name: _label_array(ds) for name, ds in parts.items()}
    _check_labelled(raw)
    features = {name: ds.features["label"] for name, ds in parts.items()}
    first = next(iter(features.values()))
    if isinstance(first, datasets.ClassLabel):
        if any(feature != first for feature in features.values()):
            raise DataError(f"the splits' label columns name different classes: {features}; give them one ClassLabel")
        return list(first.names), raw
    values = np.concatenate(list(raw.values()))
    if values.dtype.kind in "OU":  # strings: the sorted distinct values, as imagefolder names its classes
        names = sorted(set(values.tolist()))
        index = {name: i for i, name in enumerate(names)}
        return names, {split: np.array([index[v] for v in labels], dtype=np.int64) for split, labels in raw.items()}
    if values.dtype.kind in "iu":
        return [str(i) for i in range(int(values.max()) + 1)], raw
    raise DataError(f"data.label_column: labels must be ClassLabel, strings or integers, not {first}")


def _check_labelled(labels: dict[str, np.ndarray]) -> None:
    """Unlabelled rows (-1, as some Hub test splits hold) cannot be trained or scored on."""
    for split, values in labels.items():
        if values.dtype.kind in "iu" and (values < 0).any():
            raise DataError(
                f"the {split} split has {(values < 0).sum()} rows without a label (-1); choose another "
                "data.train_split / data.eval_split"
            )


def _relabel(ds: datasets.Dataset, ids: np.ndarray, names: list[str]) -> datasets.Dataset:
    """ds with labels `ids` (a ClassLabel of `names`), rows with id -1 dropped.

    The new label column is a small in-memory table set beside the untouched image column
    (concatenation along columns), so no image is read or copied."""
    if ds.features["label"] == datasets.ClassLabel(names=names):
        return ds  # already these classes in this order: nothing was renamed or dropped
    labels = datasets.Dataset.from_dict(
        {"label": ids}, features=datasets.Features({"label": datasets.ClassLabel(names=names)})
    )
    relabelled = datasets.concatenate_datasets([ds.select_columns(["image"]), labels], axis=1)
    kept = np.flatnonzero(ids >= 0)
    return relabelled if len(kept) == len(ds) else relabelled.select(kept, keep_in_memory=True)


def _carve_eval(train: datasets.Dataset, size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, eval): `size` (a fraction < 1, or a count) of train held out, stratified by label, seeded.

    Not train_test_split(stratify_by_column=...): in datasets 5.2 it reads the labels row by row
    (3 s for CIFAR, minutes for ImageNet), writes index files beside the data (read-only folders fail)
    and raises with keep_in_memory=True."""
    labels = _label_array(train)
    n_eval = round(size * len(labels)) if size < 1 else int(size)
    if not 1 <= n_eval < len(labels):
        raise DataError(
            f"data.validation_size={size} holds out {n_eval} of {len(labels)} train images; it must leave at least "
            "one on each side. Set another data.validation_size, or data.eval_split"
        )
    held_out = _rank_within_class(labels, seed) < _class_quotas(labels, n_eval)[labels]
    logger.info("data: no eval split; held out %d of %d train images, stratified by class", n_eval, len(labels))
    return (
        train.select(np.flatnonzero(~held_out), keep_in_memory=True),
        train.select(np.flatnonzero(held_out), keep_in_memory=True),
    )


def _class_quotas(labels: np.ndarray, total: int) -> np.ndarray:
    """Per class id, its share of `total` in proportion to its size; the largest remainders get the rounding."""
    exact = np.bincount(labels) * total / len(labels)
    quotas = np.floor(exact).astype(np.int64)
    quotas[np.argsort(quotas - exact, kind="stable")[: total - quotas.sum()]] += 1
    return quotas


def _rank_within_class(labels: np.ndarray, seed: int) -> np.ndarray:
    """Each row's position among the rows of its class (0, 1, 2, ...), in a seeded random order."""
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, random within a class
    grouped = labels[order]
    ranks = np.empty(len(labels), dtype=np.int64)
    ranks[order] = np.arange(len(labels)) - np.searchsorted(grouped, grouped, side="left")
    return ranks


def _cap_train(train: datasets.Dataset, cfg: DataConfig, seed: int) -> datasets.Dataset:
    if cfg.max_per_class is not None:
        kept = _rank_within_class(_label_array(train), seed) < cfg.max_per_class
        train = train.select(np.flatnonzero(kept), keep_in_memory=True)
    return _shuffled_head(train, cfg.max_train_samples, seed)


def _shuffled_head(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """A seeded random `n` rows (all rows when n is None or too big), kept in file order."""
    if n is None or n >= len(ds):
        return ds
    chosen = np.random.default_rng(seed).permutation(len(ds))[:n]
    return ds.select(np.sort(chosen), keep_in_memory=True)
