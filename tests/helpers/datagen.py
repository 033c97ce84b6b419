"""Tiny, learnable image-classification datasets written to disk, for tests.

Every generator writes `per_class` images of each class into each split and returns the root it wrote.
Class i is a distinct colour with a stripe pattern (stripes every i+2 pixels) plus pixel noise, so a tiny
ViT separates the classes within a few dozen steps. Seeded: the same arguments write the same pixels.

    make_imagefolder(root)                  root/train/cat/0.png, ... (flat: splits=None -> root/cat/0.png)
    make_parquet_dataset(root)              root/data/train-00000-of-00001.parquet, ... (Hub layout;
                                            folder="plain_text", shards=8 as uoft-cs/cifar10)
    make_arrow_dataset(root)                the same with .arrow files
    make_saved_dataset(root)                Dataset(Dict).save_to_disk(root)

The file-based and saved datasets take `image_column`/`label_column` names and `label_kind`:
"classlabel" (ClassLabel feature), "string" (the class names) or "int" (plain integers).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "frog")
SPLITS = ("train", "test")

# Saturated colours far apart, so that colour alone tells the first classes apart.
_PALETTE = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 200, 30), (200, 40, 200), (30, 200, 210)]


def class_image(class_id: int, rng: np.random.Generator, size: int = 20, mode: str = "RGB") -> Image.Image:
    """One image of class `class_id`: its colour, its stripes, and noise; converted to `mode`."""
    colour = np.array(_PALETTE[class_id % len(_PALETTE)], dtype=np.float32)
    stripes = (np.arange(size) // (class_id + 2)) % 2  # class-specific period, along the width
    pixels = colour * (0.6 + 0.4 * stripes[None, :, None]) + rng.normal(0, 12, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def make_imagefolder(
    root,
    classes=CLASSES,
    per_class: int = 6,
    size: int = 20,
    splits: tuple[str, ...] | None = SPLITS,
    mode: str = "RGB",
    seed: int = 0,
) -> Path:
    """root/<split>/<class>/<n>.png for each split; splits=None writes the flat root/<class>/<n>.png."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits or (None,):
        for class_id, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(per_class):
                class_image(class_id, rng, size, mode).save(folder / f"{n}.png")
    return root


def make_parquet_dataset(root, folder: str = "data", shards: int = 1, **kwargs) -> Path:
    """Hub layout root/<folder>/<split>-0000i-of-0000<shards>.parquet; kwargs as make_dataset_dict."""
    return _write_hub_layout(Path(root) / folder, make_dataset_dict(**kwargs), "parquet", shards)


def make_arrow_dataset(root, folder: str = "data", shards: int = 1, **kwargs) -> Path:
    """Hub layout root/<folder>/<split>-0000i-of-0000<shards>.arrow; kwargs as make_dataset_dict."""
    return _write_hub_layout(Path(root) / folder, make_dataset_dict(**kwargs), "arrow", shards)


def make_saved_dataset(root, single: bool = False, **kwargs) -> Path:
    """save_to_disk of a DatasetDict, or of its first split alone when single=True; kwargs as make_dataset_dict."""
    splits = make_dataset_dict(**kwargs)
    (splits[next(iter(splits))] if single else splits).save_to_disk(str(root))
    return Path(root)


def make_dataset_dict(
    classes=CLASSES,
    per_class: int = 6,
    size: int = 20,
    splits: tuple[str, ...] = SPLITS,
    image_column: str = "image",
    label_column: str = "label",
    label_kind: str = "classlabel",
    mode: str = "RGB",
    seed: int = 0,
) -> datasets.DatasetDict:
    """In memory: each split holds per_class images of each class, classes interleaved (0, 1, 2, 0, 1, ...)."""
    rng = np.random.default_rng(seed)
    label_feature = {
        "classlabel": datasets.ClassLabel(names=list(classes)),
        "string": datasets.Value("string"),
        "int": datasets.Value("int64"),
    }[label_kind]
    features = datasets.Features({image_column: datasets.Image(), label_column: label_feature})
    out = {}
    for split in splits:
        ids = [class_id for _ in range(per_class) for class_id in range(len(classes))]
        images = [class_image(class_id, rng, size, mode) for class_id in ids]
        labels = [classes[i] for i in ids] if label_kind == "string" else ids
        out[split] = datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)
    return datasets.DatasetDict(out)


def _write_hub_layout(folder: Path, splits: datasets.DatasetDict, ext: str, shards: int) -> Path:
    """Files named as on the Hub, which load_dataset sorts into splits by name; returns the dataset root."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in splits.items():
        for i in range(shards):
            path = folder / f"{split}-{i:05d}-of-{shards:05d}.{ext}"
            shard = ds.shard(shards, i, contiguous=True)
            if ext == "parquet":
                shard.to_parquet(str(path))
            else:
                _write_arrow_stream(shard, path)
    return folder.parent


def _write_arrow_stream(ds: datasets.Dataset, path: Path) -> None:
    """The Arrow IPC stream format, which the `arrow` builder of load_dataset reads; the schema keeps the features."""
    import pyarrow as pa

    table = ds.data.table
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
