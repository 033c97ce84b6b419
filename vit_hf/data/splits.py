"""What a source is shaped into: a train and an eval split of exactly two columns, `image` (undecoded:
{"bytes", "path"}) and `label` (a ClassLabel of the same names in both), and how classes are subset."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np

from ..errors import DataError

SplitData = datasets.Dataset | datasets.IterableDataset  # map-style, or streamed


# The image column as datasets stores it, {"bytes", "path"}: decoding is decode.py's, guarded against
# bad files. datasets' own decoding would raise at the first one, before any of our code sees it.
UNDECODED = datasets.Image(decode=False)


@dataclass
class Splits:
    train: SplitData | None  # None when load_splits(need_train=False)
    eval: SplitData
    label_names: list[str]  # index i = label id i, in both splits
    # Images in the eval split when known: its length, or for a stream what its split info and
    # data.max_eval_samples say (at most). None: a stream of unknown length.
    eval_images: int | None = None

    def __post_init__(self):
        if self.eval_images is None and isinstance(self.eval, datasets.Dataset):
            self.eval_images = len(self.eval)


def features(ds: SplitData) -> datasets.Features:
    if ds.features is None:
        raise DataError(
            f"split {ds.split} declares no features (column types), so its image and label columns cannot be "
            "found; load it map-style (data.streaming: false)"
        )
    return ds.features


def class_subset(classes: list[str] | int | None, names: list[str]) -> tuple[list[str], np.ndarray]:
    """(kept names in the recipe's order, old id -> new id with -1 for dropped classes)."""
    if classes is None:
        return names, np.arange(len(names))
    if isinstance(classes, int):
        if not 1 <= classes <= len(names):
            raise DataError(f"data.classes={classes}: the dataset has {len(names)} classes; give 1..{len(names)}")
        keep = list(range(classes))
    else:
        index = {name: i for i, name in enumerate(names)}
        unknown = [name for name in map(str, classes) if name not in index]
        if unknown:
            raise DataError(f"data.classes: unknown class names {unknown[:5]}; valid names include {names[:8]}")
        keep = [index[str(name)] for name in classes]
    old_to_new = np.full(len(names), -1)
    old_to_new[keep] = np.arange(len(keep))
    return [names[i] for i in keep], old_to_new
