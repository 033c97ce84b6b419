"""Tiny, learnable image-classification datasets written to disk, for tests.

Every generator writes `per_class` images of each class into each split and returns the root it wrote.
Class i is a distinct colour with a stripe pattern (stripes every i+2 pixels) plus pixel noise, so a tiny
ViT separates the classes within a few dozen steps. Seeded: the same arguments write the same pixels.

    make_imagefolder(root)                  root/train/cat/0.png, ... (flat: splits=None -> root/cat/0.png)
    make_parquet_dataset(root)              root/data/train-00000-of-00001.parquet, ... (Hub layout;
                                            folder="plain_text", shards=8 as uoft-cs/cifar10)
    make_arrow_dataset(root)                the same with .arrow files
    make_saved_dataset(root)                Dataset(Dict).save_to_disk(root)
    make_imagenet_like(root)                root/train/<class>/<n>.JPEG, root/validation/...: ImageNet-sized
                                            photographic JPEGs (300-800 px, ~95 KB at quality 90)

The file-based and saved datasets take `image_column`/`label_column` names and `label_kind`:
"classlabel" (ClassLabel feature), "string" (the class names) or "int" (plain integers).
"""

from __future__ import annotations

import functools
import io
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
    image_format: str | None = None,
) -> datasets.DatasetDict:
    """In memory: each split holds per_class images of each class, classes interleaved (0, 1, 2, 0, 1, ...).
    image_format ("JPEG"): the images stored as files of that format (default: datasets' own, PNG)."""
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
        if image_format is not None:
            images = [{"bytes": _encoded(image, image_format), "path": None} for image in images]
        labels = [classes[i] for i in ids] if label_kind == "string" else ids
        out[split] = datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)
    return datasets.DatasetDict(out)


def _encoded(image: Image.Image, image_format: str) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **({"quality": JPEG_QUALITY} if image_format == "JPEG" else {}))
    return out.getvalue()


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


# ImageNet-like JPEGs -------------------------------------------------------------------------------------
# ImageNet's photos: most 500 px on the longer side (4:3, 3:2, 5:4, square; a quarter portrait), the rest
# 300-800 px, ~110 KB at JPEG quality ~90. Made of patches of real photos (scikit-learn's two sample images,
# shipped inside the package, also at half scale: no upscaled, smooth content) with sensor-like noise.
PHOTO_LONG_SIDE = 500
PHOTO_ASPECTS = (4 / 3, 3 / 2, 5 / 4, 1.0)
PATCH_SIDES = (100, 200)
NOISE_SIGMA = 7.0
JPEG_QUALITY = 90


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images  # the test extra

    photos = load_sample_images().images
    return (*photos, *(np.asarray(Image.fromarray(photo).reduce(2)) for photo in photos))


@functools.cache
def _noise() -> np.ndarray:
    return np.random.default_rng(123).normal(0, NOISE_SIGMA, (1024, 1024, 3)).round().astype(np.int16)


def photo_like_jpeg(rng: np.random.Generator, class_id: int = 0) -> bytes:
    """One ImageNet-like JPEG: a mosaic of photo patches, class `class_id`'s colour cast, noise, quality 90."""
    long = PHOTO_LONG_SIDE if rng.random() < 0.6 else int(rng.integers(300, 801))
    width, height = long, int(round(long / float(rng.choice(PHOTO_ASPECTS))))
    if rng.random() < 0.25:
        width, height = height, width
    tint = 0.75 + 0.5 * np.array(_PALETTE[class_id % len(_PALETTE)]) / 255
    canvas = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, PATCH_SIDES[1]):
        for left in range(0, width, PATCH_SIDES[1]):
            _paste_patch(canvas, top, left, tint, rng)
    dy, dx = rng.integers(0, 1024 - height + 1), rng.integers(0, 1024 - width + 1)
    noisy = np.clip(canvas + _noise()[dy:dy + height, dx:dx + width], 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _paste_patch(canvas: np.ndarray, top: int, left: int, tint: np.ndarray, rng: np.random.Generator) -> None:
    """A random patch of a random photo, maybe mirrored, colour-cast, into canvas[top:, left:] (cut at its edge)."""
    photo = _photos()[rng.integers(len(_photos()))]
    height = min(PATCH_SIDES[1], canvas.shape[0] - top, photo.shape[0])
    width = min(PATCH_SIDES[1], canvas.shape[1] - left, photo.shape[1])
    y, x = rng.integers(0, photo.shape[0] - height + 1), rng.integers(0, photo.shape[1] - width + 1)
    patch = photo[y:y + height, x:x + width]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    gain = tint * rng.uniform(0.8, 1.2, 3)
    lut = np.clip(np.arange(256)[:, None] * gain[None, :], 0, 255).astype(np.uint8)  # per-channel gain
    canvas[top:top + height, left:left + width] = lut[patch, np.arange(3)]


def make_imagenet_like(root, classes=CLASSES, per_class: int = 10, splits=("train", "validation"),
                       seed: int = 0, eval_per_class: int | None = None) -> Path:
    """root/<split>/<class>/<n>.JPEG, ImageNet's imagefolder layout; eval splits hold eval_per_class (default
    per_class) images of each class."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        count = per_class if split == "train" or eval_per_class is None else eval_per_class
        for class_id, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                (folder / f"{n}.JPEG").write_bytes(photo_like_jpeg(rng, class_id))
    return root
