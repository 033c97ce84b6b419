"""data.gpu_decode: JPEGs decoded on the CUDA device, a batch at a time, for streams and `data.loader: decode`.

    JpegPassThrough      in the DataLoader workers: each row's file, as read (a JPEG the GPU can decode), or
                         decoded on the CPU when it cannot be (another format, CMYK, EXIF-turned, too large)
    decode_on_device     in the training step: the batch's JPEGs through nvJPEG (torchvision.io.decode_jpeg
                         on a list), each resized and center-cropped there, with decode_image's geometry

The workers then only read files, so a few CPU cores feed a GPU that decodes thousands of JPEGs per second.
Pixels: nvJPEG's IDCT and colour conversion are not libjpeg's, and the resize is torch's float bicubic, so
the images are within a few levels of decode_image's, not bit-equal (tests/e2e/test_gpu.py says how close).
Training images are decoded whole (nvJPEG has no DCT-domain scaling through torchvision).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .decode import BadImage, BatchDecoder, Decoding, open_image, resized_size, turns_sideways

logger = logging.getLogger(__name__)

# A row that the worker decoded on the CPU: this prefix, then uint8 [3, size, size]. JPEG files begin FF D8.
RAW_PREFIX = np.frombuffer(b"VITHF-RAW", np.uint8)
GPU_MODES = ("RGB", "L")  # YCbCr and greyscale JPEGs; nvJPEG through torchvision leaves CMYK to the CPU


@dataclass(frozen=True)
class GpuDecoding:
    """What the training step needs to decode a batch of encoded rows: each split's geometry, the bad-image policy."""

    train: Decoding
    eval: Decoding
    on_bad_image: str = "skip"


class JpegPassThrough(BatchDecoder):
    """A BatchDecoder whose rows are {"encoded": uint8 bytes, "labels"}: the JPEG file itself when the GPU can
    decode it, else the image decoded here (RAW_PREFIX + pixels). Bad files are skipped or raised as ever."""

    key = "encoded"

    def decode_one(self, image) -> np.ndarray:
        opened = open_image(image)  # the header only: BadImage when it is not an image
        pixels = opened.size[0] * opened.size[1]
        if opened.format == "JPEG" and opened.mode in GPU_MODES and pixels <= self.decoding.max_pixels \
                and not turns_sideways(opened):
            return np.frombuffer(_file_bytes(image), np.uint8)
        return np.concatenate([RAW_PREFIX, self.decoding(image).numpy().reshape(-1)])


def _file_bytes(image) -> bytes:
    if isinstance(image, str):
        image = {"bytes": None, "path": image}
    if image.get("bytes") is not None:
        return image["bytes"]
    with open(image["path"], "rb") as file:
        return file.read()


def collate_encoded(features: list[dict]) -> dict:
    """A batch of encoded rows: the files as a list (their lengths differ; they stay on the host, where nvJPEG
    reads them), the labels as a tensor. Labels first: the Trainer counts a batch's samples with find_batch_size,
    the first dimension of the first array it meets, which in the files would be the first JPEG's bytes."""
    return {"labels": torch.tensor([int(f["labels"]) for f in features]), "encoded": [f["encoded"] for f in features]}


def decode_on_device(encoded: list[np.ndarray], decoding: Decoding, device: torch.device,
                     on_bad_image: str = "skip") -> tuple[torch.Tensor, list[int]]:
    """(uint8 [N, 3, S, S] on `device`, the rows they are): the batch's JPEGs decoded by nvJPEG in one call, the
    CPU-decoded rows copied over together. A JPEG that nvJPEG refuses is decoded on the CPU; one that cannot be
    decoded at all is left out (on_bad_image: skip) or raises BadImage."""
    from torchvision.io import ImageReadMode, decode_jpeg  # data.gpu_decode needs torchvision (preflight checks)

    on_host = {i: _raw_pixels(row, decoding.size) for i, row in enumerate(encoded) if _is_raw(row)}
    jpegs = [i for i in range(len(encoded)) if i not in on_host]
    images = {}
    try:
        decoded = decode_jpeg([torch.from_numpy(encoded[i]) for i in jpegs], mode=ImageReadMode.RGB, device=device)
        images.update({i: resize_on_device(image, decoding) for i, image in zip(jpegs, decoded)})
    except RuntimeError:  # one bad file fails the whole call: decode the batch one by one instead
        for i in jpegs:
            image = _one_on_device(encoded[i], decoding, device)
            if image is not None:
                images[i] = image
            elif (pixels := _one_on_host(encoded[i], decoding, on_bad_image)) is not None:
                on_host[i] = pixels
    if on_host:
        rows = sorted(on_host)
        images.update(zip(rows, _stacked_on_device([on_host[i] for i in rows], device).unbind(0)))
    kept = sorted(images)
    if not kept:
        raise DataError("data.gpu_decode: no image of a batch could be decoded; check data.dataset")
    return torch.stack([images[i] for i in kept]), kept


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without stalling the host: a copy from pageable memory waits for the GPU's
    queue to drain, one from pinned (page-locked) memory is asynchronous (and safe to free: torch's pinned
    allocator keeps the buffer until the copy is done)."""
    if device.type != "cuda":
        return tensor.to(device)
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


def _stacked_on_device(rows: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Host rows as one tensor on `device`: stacked straight into pinned memory, then one copy for them all."""
    out = torch.empty((len(rows), *rows[0].shape), dtype=rows[0].dtype, pin_memory=device.type == "cuda")
    return to_device(torch.stack(rows, out=out), device)


def _one_on_device(row: np.ndarray, decoding: Decoding, device) -> torch.Tensor | None:
    """One JPEG by nvJPEG; None when it refuses the file."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return resize_on_device(decode_jpeg(torch.from_numpy(row), mode=ImageReadMode.RGB, device=device), decoding)
    except RuntimeError:
        return None


def _one_on_host(row: np.ndarray, decoding: Decoding, on_bad_image: str) -> torch.Tensor | None:
    """One file nvJPEG refused, by the CPU decoder (which names the file's problem); None when skipped."""
    try:
        return decoding({"bytes": row.tobytes(), "path": None})
    except BadImage as error:
        if on_bad_image == "raise":
            raise
        logger.warning("skipped (data.on_bad_image: skip): %s", error)
        return None


def resize_on_device(image: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """uint8 [3, H, W] on the device -> decode_image's geometry: shorter side to round(size / crop_pct)
    (antialiased bicubic, Pillow's filter), center crop, uint8 [3, size, size]."""
    if image.shape[-2:] == (decoding.size, decoding.size) and decoding.crop_pct == 1.0:
        return image
    width, height = image.shape[-1], image.shape[-2]
    resized = resized_size((width, height), round(decoding.size / decoding.crop_pct))
    scaled = F.interpolate(image.unsqueeze(0).float(), size=(resized[1], resized[0]), mode="bicubic",
                           antialias=True)[0]
    left, top = (resized[0] - decoding.size) // 2, (resized[1] - decoding.size) // 2
    cropped = scaled[:, top:top + decoding.size, left:left + decoding.size]
    return cropped.round_().clamp_(0, 255).to(torch.uint8)


def _is_raw(row: np.ndarray) -> bool:
    return len(row) > len(RAW_PREFIX) and bool((row[:len(RAW_PREFIX)] == RAW_PREFIX).all())


def _raw_pixels(row: np.ndarray, size: int) -> torch.Tensor:
    return torch.from_numpy(row[len(RAW_PREFIX):].copy()).view(3, size, size)
