"""decode: odd image modes to RGB, the resize/crop geometry, the matching image processor, reduced JPEG decoding
and its tolerance, the pixel limit, loaders."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from transformers import default_data_collator

from tests.helpers.datagen import make_imagefolder, make_parquet_dataset, photo_like_jpeg
from vit_hf.data.decode import BadImage, attach_decoding, decode_image, image_processor_for, to_rgb
from vit_hf.data.sources import load_splits
from vit_hf.recipe.schema import DataConfig

MEAN, STD = [0.5, 0.45, 0.4], [0.2, 0.25, 0.3]


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def rgb_of(img: Image.Image) -> np.ndarray:
    converted = to_rgb(img)
    assert converted.mode == "RGB" and converted.size == img.size
    return np.asarray(converted)


# --- to_rgb --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "RGBa", "CMYK", "1", "YCbCr", "I;16", "I", "F"])
def test_every_mode_becomes_rgb_uint8_of_the_right_shape(mode):
    out = decode_image(random_image(9, 7).convert(mode), size=5)
    assert out.dtype == torch.uint8 and out.shape == (3, 5, 5)


def test_transparent_pixels_become_white_and_half_transparent_ones_blend():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # transparent red: white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black: black
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black: mid grey
    out = rgb_of(Image.fromarray(rgba, "RGBA"))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 0, 0]
    assert abs(int(out[0, 2, 0]) - 127) <= 1


def test_a_palette_image_with_a_transparent_index_becomes_white_there():
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    assert rgb_of(img).tolist() == [[[255, 255, 255], [200, 100, 50]]]
    del img.info["transparency"]
    assert rgb_of(img)[0, 0].tolist() == [10, 20, 30]


def test_16_bit_images_are_scaled_to_8_bit_not_clipped():
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    out = rgb_of(Image.fromarray(values))  # mode I;16
    assert out[0, :, 0].tolist() == [0, 4, 128, 255]
    assert out[0, :, 0].tolist() == rgb_of(Image.fromarray(values.astype(np.int32)))[0, :, 0].tolist()  # mode I


def test_float_images_in_0_1_are_scaled_and_in_0_255_kept():
    assert rgb_of(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))[0, :, 1].tolist() == [0, 128, 255]
    assert rgb_of(Image.fromarray(np.array([[0.0, 100.0, 255.0]], dtype=np.float32)))[0, :, 1].tolist() == [0, 100, 255]


def test_grey_cmyk_and_ycbcr_images_keep_their_colours():
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert rgb_of(grey)[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]
    colour = random_image(6, 6)
    for mode in ("CMYK", "YCbCr"):
        assert np.abs(rgb_of(colour.convert(mode)).astype(int) - np.asarray(colour)).max() <= 3


# --- decode_image ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(40, 20), (20, 40), (16, 16), (7, 30)])
def test_decode_image_resizes_the_shorter_side_and_crops_the_centre(width, height):
    out = decode_image(random_image(width, height), size=12, crop_pct=0.75)  # shorter side to 16, crop 12
    assert out.shape == (3, 12, 12) and out.dtype == torch.uint8


def test_crop_pct_1_keeps_a_square_image_whole():
    img = random_image(24, 24)
    assert torch.equal(decode_image(img, size=24), torch.from_numpy(np.array(img)).permute(2, 0, 1))


def test_the_centre_crop_is_centred():
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, 10:20] = 255  # the middle third is white
    out = decode_image(Image.fromarray(pixels), size=10)
    assert int(out.min()) == 255


# --- The saved image processor makes the same pixels ---------------------------------------------------


def normalized(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def processed(img: Image.Image, size: int, crop_pct: float) -> torch.Tensor:
    return torch.as_tensor(np.asarray(image_processor_for(size, crop_pct, MEAN, STD)(img)["pixel_values"][0]))


def levels_apart(img: Image.Image, size: int, crop_pct: float, **decoding) -> torch.Tensor:
    """|the image processor's pixels - decode_image's|, in levels of 0-255."""
    difference = processed(img, size, crop_pct) - normalized(decode_image(img, size, crop_pct, **decoding))
    return (difference * torch.tensor(STD)[:, None, None] * 255).abs()


@pytest.mark.parametrize(
    "width, height, size, crop_pct",
    [(50, 70, 32, 1.0), (70, 50, 32, 0.875), (33, 33, 24, 0.9), (37, 91, 17, 0.95), (300, 200, 64, 0.875),
     (12, 9, 32, 1.0), (512, 384, 48, 1.0)],  # and an upscale, and an 8x downscale
)
def test_the_image_processor_makes_decode_images_pixels_within_one_level(width, height, size, crop_pct):
    # decode_image resizes with torch's uint8 antialiased bicubic, Pillow's filter; the rounding differs.
    levels = levels_apart(random_image(width, height), size, crop_pct)
    assert levels.max() <= 1.0 + 1e-4  # at every pixel


def test_the_processor_reloads_and_serves_a_vit_in_a_pipeline(tmp_path):
    from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, pipeline

    processor = image_processor_for(16, 0.875, MEAN, STD)
    processor.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == processor.to_dict()  # same class (PIL backend without torchvision), same settings
    config = ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1},
    )  # fmt: skip
    ViTForImageClassification(config).save_pretrained(tmp_path)
    classify = pipeline("image-classification", model=str(tmp_path))
    answers = classify(random_image(30, 20).convert("RGBA"))
    assert {answer["label"] for answer in answers} == {"cat", "dog"}


# --- attach_decoding through a real DataLoader -----------------------------------------------------------


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory):
    """(an imagefolder with odd-mode PNGs, a parquet dataset in 2 shards)."""
    return (
        make_imagefolder(tmp_path_factory.mktemp("folder"), per_class=3, size=20, mode="P"),
        make_parquet_dataset(tmp_path_factory.mktemp("pq"), per_class=3, size=20, shards=2),
    )


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_attach_decoding_yields_batches_the_collator_stacks(image_dirs, streaming, num_workers):
    for path in image_dirs:
        splits = load_splits(DataConfig(dataset=str(path), streaming=streaming), seed=0)
        decoded = attach_decoding(splits.train, size=16, crop_pct=0.875)
        loader = torch.utils.data.DataLoader(
            decoded, batch_size=4, num_workers=num_workers, collate_fn=default_data_collator
        )
        batches = list(loader)
        assert sum(len(batch["labels"]) for batch in batches) == 9
        first = batches[0]
        assert first["pixel_values"].shape == (4, 3, 16, 16) and first["pixel_values"].dtype == torch.uint8
        assert first["labels"].dtype == torch.int64 and set(first) == {"pixel_values", "labels"}


def test_a_decoded_item_matches_decode_image_of_its_source(image_dirs):
    splits = load_splits(DataConfig(dataset=str(image_dirs[1])), seed=0)
    item = attach_decoding(splits.eval, size=12)[5]
    assert torch.equal(item["pixel_values"], decode_image(splits.eval[5]["image"], 12))
    assert item["labels"] == splits.eval[5]["label"]


# --- Training images: JPEGs decoded reduced, within a stated tolerance ---------------------------------


@pytest.fixture(scope="module")
def photo_jpegs() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [photo_like_jpeg(rng, i % 3) for i in range(24)]


def processor_levels(data: bytes, size: int) -> np.ndarray:
    """The saved image processor's pixels for a JPEG, decoded whole, in levels of 0-255."""
    processor = image_processor_for(size, 1.0, [0.0] * 3, [1.0] * 3)
    return np.asarray(processor(Image.open(io.BytesIO(data)).convert("RGB"))["pixel_values"][0]) * 255


def test_reduced_decoding_stays_within_the_stated_tolerance_of_the_image_processor(photo_jpegs):
    # libjpeg's DCT-domain 1/2 scaling then bicubic, against bicubic from the whole image: measured on these
    # photo-like JPEGs, 1.3 levels (of 255) on average, at most 3.9 for one image. Stated: 2 and 5.
    means = []
    for data in photo_jpegs:
        reduced = decode_image({"bytes": data, "path": None}, 176, reduced=True).numpy()
        means.append(np.abs(reduced - processor_levels(data, 176)).mean())
    assert np.mean(means) <= 2.0 and max(means) <= 5.0
    exact = decode_image({"bytes": photo_jpegs[0], "path": None}, 176).numpy()
    assert np.abs(exact - processor_levels(photo_jpegs[0], 176)).max() <= 2  # whole decoding: the processor's


def test_a_jpeg_under_twice_the_size_decodes_the_same_reduced_or_not(photo_jpegs):
    data = photo_jpegs[0]
    shorter = min(Image.open(io.BytesIO(data)).size)
    size = shorter * 2 // 3  # a reduction by 1.5: no DCT scaling applies
    whole = decode_image({"bytes": data, "path": None}, size)
    assert torch.equal(decode_image({"bytes": data, "path": None}, size, reduced=True), whole)


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_decode_reduced_to_rgb(mode, photo_jpegs):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_jpegs[1])).convert(mode).save(buffer, "JPEG", quality=90)
    reduced = decode_image({"bytes": buffer.getvalue(), "path": None}, 64, reduced=True)
    whole = decode_image({"bytes": buffer.getvalue(), "path": None}, 64)
    assert reduced.shape == (3, 64, 64) and (reduced.float() - whole.float()).abs().mean() < 3


def test_an_exif_turned_jpeg_is_decoded_upright_reduced_or_not():
    pixels = np.zeros((200, 400, 3), np.uint8)  # landscape, its left half white
    pixels[:, :200] = 255
    exif = Image.Exif()
    exif[Image.ExifTags.Base.Orientation] = 6  # shown turned by 90 degrees clockwise: the white half on top
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif)
    for reduced in (False, True):
        out = decode_image({"bytes": buffer.getvalue(), "path": None}, 40, reduced=reduced).float()
        assert out.shape == (3, 40, 40)  # a portrait (200 x 400) shorter side 40: the middle 40 x 40
        upright = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))
        assert upright.shape == (400, 200, 3)
        assert out[:, :18].mean() > 240 and out[:, 22:].mean() < 15  # the white half on top


# --- Images above data.max_image_pixels ------------------------------------------------------------------


def giant_png(width: int, height: int) -> bytes:
    """A 1-bit black PNG of width x height: kilobytes on disk, however many pixels (the issue's 13,000 x 13,000)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_an_image_above_the_pixel_limit_is_refused_before_decoding():
    data = giant_png(13_000, 13_000)
    assert len(data) < 50_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either: the limit decides first
        with pytest.raises(BadImage, match=r"'giant.png'.*13000 x 13000 = 169,000,000 pixels, above data.max_image"):
            decode_image({"bytes": data, "path": "giant.png"}, 64)


def test_pillows_own_limit_never_decides_before_data_max_image_pixels(monkeypatch):
    # Above 2 x Image.MAX_IMAGE_PIXELS (179M) Image.open itself raised DecompressionBombError, from the header.
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadImage, match=r"14000 x 13000 = 182,000,000 pixels, above data.max_image_pixels"):
        decode_image({"bytes": giant_png(14_000, 13_000), "path": "giant.png"}, 64)
    assert Image.MAX_IMAGE_PIXELS == limit  # off for the open only
    # A JPEG above Pillow's limit (made small here) and under data.max_image_pixels is decoded, as any other.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1500), (200, 30, 30)).save(buffer, "JPEG")
    out = decode_image({"bytes": buffer.getvalue(), "path": None}, 64, max_pixels=4_000_000)
    assert out.shape == (3, 64, 64) and abs(int(out[0, 32, 32]) - 200) <= 3
    assert Image.MAX_IMAGE_PIXELS == 500_000


def test_a_jpeg_above_the_limit_is_decoded_reduced_below_it_and_another_format_is_refused():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)).resize((2000, 1500))
    encoded = {}
    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        big.save(buffer, fmt)
        encoded[fmt] = buffer.getvalue()
    # 3 MP, the limit 1 MP: the JPEG decodes at 1/2 (750k pixels) even for the eval geometry (reduced=False)
    out = decode_image({"bytes": encoded["JPEG"], "path": None}, 600, max_pixels=1_000_000)
    assert out.shape == (3, 600, 600)
    with pytest.raises(BadImage, match="2000 x 1500 = 3,000,000 pixels, above data.max_image_pixels"):
        decode_image({"bytes": encoded["PNG"], "path": None}, 600, max_pixels=1_000_000)


# --- data.gpu_decode: what the workers hand over, and the device-side resize (run here on the CPU) --------


def test_the_workers_pass_jpeg_files_through_and_decode_the_rest_on_the_cpu(photo_jpegs):
    from vit_hf.data.decode import Decoding
    from vit_hf.data.gpu_decode import RAW_PREFIX, JpegPassThrough

    cmyk, png = io.BytesIO(), io.BytesIO()
    Image.open(io.BytesIO(photo_jpegs[0])).convert("CMYK").save(cmyk, "JPEG")
    Image.open(io.BytesIO(photo_jpegs[0])).save(png, "PNG")
    rows = [{"bytes": data, "path": name} for data, name in
            ((photo_jpegs[0], "a.jpg"), (cmyk.getvalue(), "cmyk.jpg"), (png.getvalue(), "b.png"), (b"junk", "x.jpg"))]
    decoding = Decoding(32)
    out = JpegPassThrough(decoding, "skip", never_empty=False)({"image": rows, "label": [0, 1, 2, 3]})
    assert out["labels"] == [0, 1, 2]  # the junk file is skipped, as a bad image always is
    assert out["encoded"][0].tobytes() == photo_jpegs[0]  # the JPEG file, as read: decoded on the GPU
    for row, image in zip(out["encoded"][1:], rows[1:3]):  # CMYK and PNG: decoded here, at decode_image's geometry
        assert row[:len(RAW_PREFIX)].tobytes() == RAW_PREFIX.tobytes()
        np.testing.assert_array_equal(row[len(RAW_PREFIX):].reshape(3, 32, 32), decoding(image).numpy())


def test_a_batch_of_jpeg_files_counts_its_images_for_the_trainer(photo_jpegs):
    # The Trainer counts samples with find_batch_size (the first array's first dimension): not the bytes of a file.
    from transformers.trainer_pt_utils import find_batch_size

    from vit_hf.data.loaders import batch_collator

    rows = [{"encoded": np.frombuffer(data, np.uint8), "labels": i % 3} for i, data in enumerate(photo_jpegs[:5])]
    batch = batch_collator(rows)
    assert find_batch_size(batch) == 5 and batch["labels"].tolist() == [0, 1, 2, 0, 1]
    assert [row.tobytes() for row in batch["encoded"]] == photo_jpegs[:5]


def test_the_device_resize_makes_decode_images_geometry_within_a_level(photo_jpegs):
    from vit_hf.data.decode import Decoding
    from vit_hf.data.gpu_decode import resize_on_device

    for crop_pct in (1.0, 0.875):
        whole = torch.from_numpy(np.array(Image.open(io.BytesIO(photo_jpegs[2])))).permute(2, 0, 1)
        on_device = resize_on_device(whole, Decoding(64, crop_pct)).int()  # float bicubic: on any device
        expected = decode_image({"bytes": photo_jpegs[2], "path": None}, 64, crop_pct).int()
        assert on_device.shape == (3, 64, 64) and (on_device - expected).abs().float().mean() < 0.5
