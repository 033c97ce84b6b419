"""decode: odd image modes to RGB, the resize/crop geometry, the matching image processor, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import default_data_collator

from tests.helpers.datagen import make_imagefolder, make_parquet_dataset
from vit_hf.data.decode import attach_decoding, decode_image, image_processor_for, to_rgb
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


@pytest.mark.parametrize(
    "width, height, size, crop_pct",
    [(50, 70, 32, 1.0), (70, 50, 32, 0.875), (33, 33, 24, 0.9), (37, 91, 17, 0.95), (300, 200, 64, 0.875)],
)
def test_the_image_processor_makes_decode_images_pixels(width, height, size, crop_pct):
    img = random_image(width, height)
    assert torch.allclose(processed(img, size, crop_pct), normalized(decode_image(img, size, crop_pct)), atol=1e-5)


def test_big_downscales_differ_from_the_processor_by_under_one_level_on_average():
    # 8x smaller: decode_image box-reduces first (REDUCING_GAP), the processor resamples in one go.
    img = random_image(64, 48).resize((512, 384), Image.BICUBIC)
    levels = (processed(img, 48, 1.0) - normalized(decode_image(img, 48))) * torch.tensor(STD)[:, None, None] * 255
    assert levels.abs().mean() < 1.0 and levels.abs().max() <= 6


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
