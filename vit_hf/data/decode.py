"""Pixels: one image at a time to uint8 RGB `[3, size, size]`, with the geometry of the saved image processor.

    train_set = attach_decoding(splits.train, size, crop_pct)   # items: {"pixel_values": uint8 [3,S,S], "labels": int}
    processor = image_processor_for(size, crop_pct, mean, std)  # saved with the model, for pipeline()

No augmentation and no normalization here: both run batched on the training device (augment.py).
decode_image and the image processor make the same pixels (resize the shorter side to
round(size / crop_pct) with PIL bicubic, center-crop size x size), so `pipeline("image-classification")`
sees what evaluation saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import datasets
import numpy as np
import torch
from PIL import Image

# Downscaling by 6x or more first box-reduces by an integer factor, then resamples: several times
# faster on big photos, and "indistinguishable from fair resampling in most cases" (Pillow's docs).
# Smaller ratios, ImageNet at 224 included, are resampled exactly as the image processor does.
REDUCING_GAP = 3.0

# Stream decoding works on small batches: a loader worker's first batch comes quickly and its memory stays low.
STREAM_DECODE_BATCH = 32

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited on white, 16-bit and float images scaled (not clipped) to 0-255."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_BIT_DEPTH_MODES:
        return _scale_to_8_bit(img).convert("RGB")
    if "A" in img.getbands() or "transparency" in img.info:  # RGBA, LA, PA, P or L with a transparent colour
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _scale_to_8_bit(img: Image.Image) -> Image.Image:
    """An L image from a 16/32-bit integer or float one; PIL's own convert clips everything above 255.

    The full scale is guessed from the mode and the values: I;16 is 0-65535; an `I` image is 16-bit
    when a value exceeds 255, else already 8-bit; an `F` image is 0-1 when no value exceeds 1, else 0-255."""
    values = np.asarray(img, dtype=np.float32)
    peak = float(values.max(initial=0))
    if img.mode.startswith("I;16") or (img.mode == "I" and peak > 255):
        full_scale = 65535.0
    elif img.mode == "F" and peak <= 1:
        full_scale = 1.0
    else:
        full_scale = 255.0
    return Image.fromarray(np.clip(np.rint(values * (255 / full_scale)), 0, 255).astype(np.uint8), "L")


def decode_image(img: Image.Image, size: int, crop_pct: float = 1.0) -> torch.Tensor:
    """uint8 [3, size, size]: RGB, shorter side resized to round(size / crop_pct) (bicubic), center crop."""
    img = to_rgb(img)
    resized = _resized_size(img.size, round(size / crop_pct))
    if resized != img.size:
        img = img.resize(resized, Image.BICUBIC, reducing_gap=REDUCING_GAP)
    # The image processor's center crop: offsets rounded down.
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    img = img.crop((left, top, left + size, top + size))
    # np.array, not np.asarray: the latter is read-only, which torch warns about.
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _resized_size(width_height: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side `shorter`; the longer side rounded down, as transformers does."""
    width, height = width_height
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def attach_decoding(
    ds: datasets.Dataset | datasets.IterableDataset, size: int, crop_pct: float = 1.0
) -> datasets.Dataset | datasets.IterableDataset:
    """The dataset with items {"pixel_values": uint8 [3, size, size], "labels": int}, decoded on access.

    `ds` has the columns `image` and `label` (sources.load_splits). Map-style datasets decode in
    `__getitem__` (with_transform), streams in a lazy map; either way in the data-loader workers."""
    decode_batch = partial(_decode_batch, size=size, crop_pct=crop_pct)
    if isinstance(ds, datasets.IterableDataset):
        return ds.map(decode_batch, batched=True, batch_size=STREAM_DECODE_BATCH, remove_columns=["image", "label"])
    return ds.with_transform(decode_batch)


def _decode_batch(batch: dict, size: int, crop_pct: float) -> dict:
    # A list of tensors, not a stacked one: datasets hands out items one by one, and the collator stacks.
    return {
        "pixel_values": [decode_image(img, size, crop_pct) for img in batch["image"]],
        "labels": list(batch["label"]),
    }


def image_processor_for(size: int, crop_pct: float, mean: Sequence[float], std: Sequence[float]):
    """The image processor that makes decode_image's pixels, then rescales and normalizes: save it with the model.

    BitImageProcessorPil: the PIL backend of BitImageProcessor (transformers 5), whose resize is
    decode_image's. It saves as image_processor_type "BitImageProcessor", so AutoImageProcessor
    loads the torchvision backend where torchvision is installed, else this one."""
    from transformers import BitImageProcessorPil
    from transformers.image_utils import PILImageResampling

    return BitImageProcessorPil(
        do_convert_rgb=True,
        do_resize=True,
        size={"shortest_edge": round(size / crop_pct)},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
    )
