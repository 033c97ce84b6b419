"""Pixels: one image at a time to uint8 RGB `[3, size, size]`, with the geometry of the saved image processor.

Details: docs/DESIGN.md, "Decoding".
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from datasets.utils.file_utils import is_local_path
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import BitImageProcessorPil
from transformers.image_utils import PILImageResampling

from ..errors import DataError
from ..recipe.schema import MAX_IMAGE_PIXELS

logger = logging.getLogger(__name__)

# Stream decoding works on small batches: a loader worker's first batch comes quickly and its memory stays low.
STREAM_DECODE_BATCH = 32

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

# data.on_bad_image: skipped images are logged by name up to this many per process, then counted.
NAMED_SKIPS = 5

# datasets' own decoder, for remote paths (hf://, https://: its download config and tokens); bytes and local
# paths are opened here, lazily, so that a JPEG can be decoded reduced and a huge image refused before decoding.
_DATASETS_IMAGE = datasets.Image()


class BadImage(DataError):
    """An image that cannot be decoded; the message names its file and says why."""

    def __init__(self, message: str):
        # An error in a DataLoader worker reaches the main process as BadImage(worker's traceback as
        # text): keep only our message, so the user reads one line naming the file.
        super().__init__(message.rsplit(f"{__name__}.BadImage: ", 1)[-1].strip())


@dataclass(frozen=True)
class Decoding:
    """How a split's images become uint8 [3, size, size]: decode_image's arguments, in one value.

    The train split keeps the whole (square) image, decoded reduced where that is faster; the eval split the
    saved image processor's geometry (crop_pct), decoded whole: pipeline.py says which is which."""

    size: int
    crop_pct: float = 1.0
    reduced: bool = False
    max_pixels: int = MAX_IMAGE_PIXELS

    def __call__(self, img: Image.Image | dict | str) -> torch.Tensor:
        return decode_image(img, self.size, self.crop_pct, reduced=self.reduced, max_pixels=self.max_pixels)

    def into(self, img: Image.Image | dict | str, out: torch.Tensor) -> None:
        """decode_image's pixels written into `out` (uint8 [3, size, size]), one copy fewer: a batch's row."""
        out.copy_(_decoded_view(img, self.size, self.crop_pct, self.reduced, self.max_pixels))


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


def open_image(value: dict | str) -> Image.Image:
    """A PIL image from datasets' undecoded form ({"bytes", "path"}) or a path: its header read, its pixels not
    yet decoded (a remote path is decoded whole, by datasets); BadImage if it is not an image."""
    name = image_name(value)
    if isinstance(value, str):
        value = {"bytes": None, "path": value}
    if _is_empty(value):
        raise BadImage(f"cannot decode image {name}: the file is empty")
    try:
        if value.get("bytes") is None and not is_local_path(value["path"]):
            return _DATASETS_IMAGE.decode_example(value)
        with _pillows_pixel_limit_off():
            return Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"])
    except UnidentifiedImageError:
        raise BadImage(f"cannot decode image {name}: not in an image format Pillow reads") from None
    # Pillow signals a malformed file with a dozen exception types (OSError, SyntaxError, ValueError,
    # struct.error, DecompressionBombError, ...); whatever it raises, this image cannot be used.
    except Exception as exc:  # noqa: BLE001
        raise BadImage(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from None


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillows_pixel_limit_off():
    """Pillow's own size check off for one Image.open, then back as it was (other code in the process keeps it).

    Image.open warns above Image.MAX_IMAGE_PIXELS (89M pixels) and refuses above twice that (179M) from the
    header, before data.max_image_pixels could decide: a 200M-pixel JPEG that decodes reduced under the limit
    would be a bad image. vit_hf checks the size itself right after the open, still before decoding. Pillow has
    no per-call setting; the lock keeps two threads from restoring each other's None."""
    with _PILLOW_LIMIT_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _load(img: Image.Image, name: str) -> Image.Image:
    """The image with its pixels decoded; BadImage (naming the file) when they cannot be."""
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001  (as open_image: Pillow's many exception types)
        raise BadImage(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from None
    return img


def _is_empty(value: dict) -> bool:
    if value.get("bytes") is not None:
        return not value["bytes"]
    path = value.get("path")
    return path is not None and os.path.isfile(path) and os.path.getsize(path) == 0


def image_name(value) -> str:
    """The file an image came from, for messages: its path, else what it is."""
    if isinstance(value, str):
        return repr(value)
    path = value.get("path") if isinstance(value, dict) else getattr(value, "filename", None)
    if path:
        return repr(path)
    size = len(value.get("bytes") or b"") if isinstance(value, dict) else None
    return f"(embedded, {size} bytes)" if size is not None else "(in memory)"


def decode_image(
    img: Image.Image | dict | str, size: int, crop_pct: float = 1.0, *, reduced: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> torch.Tensor:
    """uint8 [3, size, size]: RGB, shorter side resized to round(size / crop_pct) (bicubic), center crop.

    `img` is a PIL image, datasets' undecoded form ({"bytes", "path"}) or a path (then EXIF orientation is
    applied, as datasets does). `reduced`: a JPEG at least twice the resized size is decoded at 1/2, 1/4 or 1/8
    scale (see _draft). An image that would decode to more than `max_pixels` pixels is refused before
    decoding. Raises BadImage, naming the file, when it cannot be decoded or converted to RGB."""
    return _decoded_view(img, size, crop_pct, reduced, max_pixels).contiguous()


def _decoded_view(img: Image.Image | dict | str, size: int, crop_pct: float, reduced: bool,
                  max_pixels: int) -> torch.Tensor:
    """decode_image's pixels, as a view into the resized image (its center crop)."""
    opened_here = not isinstance(img, Image.Image)
    name = image_name(img)
    if opened_here:
        img = open_image(img)
    resized = resized_size(img.size, round(size / crop_pct))
    extent = _draft(img, resized, reduced or _pixels(img.size) > max_pixels)
    if _pixels(img.size) > max_pixels:
        raise BadImage(f"cannot decode image {name}: {img.size[0]} x {img.size[1]} = {_pixels(img.size):,} pixels, "
                       f"above data.max_image_pixels ({max_pixels:,})")
    img = _load(img, name)
    if opened_here and turns_sideways(img):
        extent, resized = extent[::-1], resized[::-1]
    if opened_here:
        img = _upright(img)
    try:
        img = to_rgb(img)
    except (OSError, ValueError) as exc:  # a mode Pillow cannot convert, or pixels it cannot read
        raise BadImage(f"cannot convert image {name} (mode {img.mode}) to RGB: {exc}") from None
    return _resize_and_crop(img, extent, resized, size)


def resized_size(width_height: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side `shorter`; the longer side rounded down, as transformers does."""
    width, height = width_height
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def _pixels(width_height: tuple[int, int]) -> int:
    return width_height[0] * width_height[1]


def _draft(img: Image.Image, resized: tuple[int, int], reduce: bool) -> tuple[float, float]:
    """Ask for a JPEG to be decoded at 1/2, 1/4 or 1/8 scale, the smallest that still covers `resized`.

    libjpeg scales in the DCT domain, so the reduction costs nothing and the decoding less (PIL's Image.draft;
    a no-op for other formats, and for JPEGs less than twice `resized`). Returns the extent of the image in
    the pixels it will decode to: a reduced side is the source's / scale, which is not a whole number when
    the source's side is not a multiple of the scale (PIL's draft box)."""
    if reduce:
        drafted = img.draft(None, resized)
        if drafted is not None:
            return float(drafted[1][2]), float(drafted[1][3])
    return float(img.size[0]), float(img.size[1])


# EXIF orientations that turn the image by 90 or 270 degrees (its width and height swap).
_SIDEWAYS = (5, 6, 7, 8)


def _orientation(img: Image.Image) -> int | None:
    return img.getexif().get(Image.ExifTags.Base.Orientation)


def turns_sideways(img: Image.Image) -> bool:
    """The image's EXIF orientation turns it by 90 or 270 degrees (shared with gpu_decode, which leaves such
    JPEGs to the CPU)."""
    return _orientation(img) in _SIDEWAYS


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says, as datasets' decode_example does (ImageOps.exif_transpose).

    A reduced JPEG's fractional last pixel (see _draft) then sits on the side the turn moved it to; resizing
    assumes it last, a sub-pixel offset that only EXIF-turned JPEGs decoded reduced have."""
    return img if _orientation(img) in (None, 1) else ImageOps.exif_transpose(img)


def _resize_and_crop(img: Image.Image, extent: tuple[float, float], resized: tuple[int, int], size: int):
    """The RGB image resized to `resized` (bicubic, antialiased) and center-cropped to size x size, uint8 [3, S, S].

    torch's uint8 antialiased bicubic is Pillow's filter (a = -0.5, support scaled with the reduction) in
    vectorized code: within one level of the image processor's Image.resize, and 3-6x faster here. A reduced
    JPEG covers `extent` (fractional) in its pixels, so the scale is given, not the output size; it is nudged
    up by 1e-9 so that float rounding never drops the last row (a shift of under a millionth of a pixel)."""
    # HWC viewed as CHW: channels-last strides, which torch's uint8 resampling kernels work on directly.
    pixels = _as_tensor(img).permute(2, 0, 1).unsqueeze(0)
    height, width = pixels.shape[-2:]
    if (width, height) != (extent[0], extent[1]):
        scale = (resized[1] / extent[1] * (1 + 1e-9), resized[0] / extent[0] * (1 + 1e-9))
        pixels = F.interpolate(pixels, scale_factor=scale, mode="bicubic", antialias=True,
                               recompute_scale_factor=False)
    elif (width, height) != resized:
        pixels = F.interpolate(pixels, size=(resized[1], resized[0]), mode="bicubic", antialias=True)
    # The image processor's center crop: offsets rounded down.
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    return pixels[0, :, top:top + size, left:left + size]


def _as_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 [H, W, 3] over one copy of the image's pixels (np.array would make a second one).

    The array numpy makes from Pillow's bytes is read-only; nothing writes to it (resizing and cropping make
    new tensors), so torch's warning about that is silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(img))


def attach_decoding(
    ds: datasets.Dataset | datasets.IterableDataset, size: int | Decoding, crop_pct: float = 1.0,
    on_bad_image: str = "skip", decoder: type[BatchDecoder] | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """The dataset with items {"pixel_values": uint8 [3, size, size], "labels": int}, decoded on access.

    `size` is a side in pixels (with `crop_pct`), or a whole Decoding. `ds` has the columns `image` and
    `label` (sources.load_splits). Map-style datasets decode in `__getitem__` (with_transform), streams in
    a lazy map; either way in the data-loader workers. Images that cannot be decoded are skipped (logged)
    or raise BadImage, as `on_bad_image` says. A transform cannot drop items, but the Trainer's loader asks
    for whole batches (`__getitems__`), which may come back shorter; a stream's batched map may return fewer
    rows. `decoder`: the BatchDecoder class (gpu_decode.JpegPassThrough leaves JPEGs to the GPU)."""
    decoding = size if isinstance(size, Decoding) else Decoding(size, crop_pct)
    decoder = decoder or BatchDecoder
    ds = undecoded(ds)
    if isinstance(ds, datasets.IterableDataset):
        return stream_decoded(ds, decoder(decoding, on_bad_image, never_empty=False))
    return ds.with_transform(decoder(decoding, on_bad_image, never_empty=True))


def stream_decoded(ds: datasets.IterableDataset, decoder: BatchDecoder) -> datasets.IterableDataset:
    """The stream decoded by `decoder`, lazily, in small batches (a batched map may return fewer rows)."""
    return undecoded(ds).map(decoder, batched=True, batch_size=STREAM_DECODE_BATCH, remove_columns=["image", "label"])


def undecoded(ds: datasets.Dataset | datasets.IterableDataset) -> datasets.Dataset | datasets.IterableDataset:
    """`ds` with its `image` column read as {"bytes", "path"}: decode_image decodes it, guarded.

    Cheap: only the column's feature changes (for a stream, only what its last step yields)."""
    if ds.features is not None and ds.features["image"] == datasets.Image(decode=False):
        return ds
    return ds.cast_column("image", datasets.Image(decode=False))


class BatchDecoder:
    """Decodes a batch of rows {"image", "label"} to {"pixel_values", "labels"}, without its bad images.

    never_empty: a batch whose every image is bad is replaced by the last good item this process
    decoded (a duplicate), as a map-style loader needs at least one item per batch; a process that has
    decoded none yet stops with BadImage (the data is then more bad than good).
    skip_rows: rows to drop undecoded before decoding any (a resumed stream's, stream_resume.py).
    Subclasses change what a row becomes (decode_one, under `key`): gpu_decode.JpegPassThrough."""

    key = "pixel_values"

    def __init__(self, decoding: Decoding, on_bad_image: str, never_empty: bool):
        self.decoding = decoding
        self.on_bad_image, self.never_empty = on_bad_image, never_empty
        self.skip_rows = 0
        self.skipped = 0
        self._last_good: tuple[torch.Tensor, int] | None = None

    def __call__(self, batch: dict) -> dict:
        if self.skip_rows:
            dropped = min(self.skip_rows, len(batch["label"]))
            self.skip_rows -= dropped
            batch = {key: values[dropped:] for key, values in batch.items()}
        # Lists of tensors, not a stacked one: datasets hands out items one by one, and the collator stacks.
        pixels, labels, first_error = [], [], None
        for image, label in zip(batch["image"], batch["label"]):
            try:
                pixels.append(self.decode_one(image))
            except BadImage as exc:
                self._on_bad_image(exc)
                first_error = first_error or exc
                continue
            labels.append(label)
        if pixels:
            self._last_good = (pixels[-1], labels[-1])
        elif self.never_empty and first_error is not None:
            pixels, labels = self._stand_in(first_error)
        return {self.key: pixels, "labels": labels}

    def decode_one(self, image):
        return self.decoding(image)

    def _on_bad_image(self, error: BadImage) -> None:
        """Raise it (data.on_bad_image: raise), or count and log it."""
        if self.on_bad_image == "raise":
            raise error
        self.skipped += 1
        if self.skipped <= NAMED_SKIPS:
            logger.warning("skipped (data.on_bad_image: skip): %s", error)
        elif _is_power_of_ten(self.skipped):
            logger.warning("skipped %d images that cannot be decoded so far (in this process)", self.skipped)

    def _stand_in(self, error: BadImage) -> tuple[list[torch.Tensor], list[int]]:
        if self._last_good is None:
            raise BadImage(f"{error}; no image decoded before it in this process either: check data.dataset")
        return [self._last_good[0]], [self._last_good[1]]


def _is_power_of_ten(n: int) -> bool:
    return n >= 10 and str(n).rstrip("0") == "1"


def image_processor_for(size: int, crop_pct: float, mean: Sequence[float], std: Sequence[float]):
    """The image processor that makes decode_image's pixels, then rescales and normalizes: save it with the model.

    BitImageProcessorPil: the PIL backend of BitImageProcessor (transformers 5), whose resize is
    decode_image's. It saves as image_processor_type "BitImageProcessor", so AutoImageProcessor
    loads the torchvision backend where torchvision is installed, else this one."""
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
