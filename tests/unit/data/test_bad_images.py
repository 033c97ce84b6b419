"""Bad input never costs a run: broken files inside a dataset are skipped (or named in a clear error),
odd but valid images are decoded, whatever the layout (imagefolder, parquet) and loader (decoding in
workers, streams)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.datagen import CLASSES, class_image
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.data.decode import BadImage, attach_decoding, decode_image
from vit_hf.data.sources import load_splits
from vit_hf.recipe.schema import DataConfig


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def bad_files() -> dict[str, bytes]:
    """Files that cannot be decoded: a truncated JPEG, an empty file, text named .png."""
    jpeg = _encoded(class_image(0, np.random.default_rng(0), size=64), "JPEG")
    return {"truncated.jpg": jpeg[: len(jpeg) // 2], "empty.png": b"", "notes.png": b"this is not an image\n"}


def odd_files() -> dict[str, bytes]:
    """Valid images far from 8-bit RGB: CMYK, 16-bit, 1x1, 3000x2000, RGBA, palette, grayscale."""
    rng = np.random.default_rng(1)
    sixteen_bit = Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16))  # mode I;16
    return {
        "cmyk.jpg": _encoded(class_image(1, rng).convert("CMYK"), "JPEG"),
        "sixteen_bit.png": _encoded(sixteen_bit, "PNG"),
        "tiny.png": _encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "large.jpg": _encoded(Image.new("RGB", (3000, 2000), (30, 200, 30)), "JPEG"),
        "rgba.png": _encoded(class_image(2, rng).convert("RGBA"), "PNG"),
        "palette.png": _encoded(class_image(0, rng).convert("P"), "PNG"),
        "grey.png": _encoded(class_image(1, rng).convert("L"), "PNG"),
    }


def rows(per_class: int, seed: int, with_bad: bool) -> list[tuple[str, bytes, int]]:
    """(file name, bytes, class id): good images of every class, then the odd ones and the bad ones."""
    rng = np.random.default_rng(seed)
    good = [(f"{CLASSES[c]}_{n}.png", _encoded(class_image(c, rng), "PNG"), c)
            for n in range(per_class) for c in range(len(CLASSES))]
    special = {**odd_files(), **(bad_files() if with_bad else {})}
    return good + [(name, data, i % len(CLASSES)) for i, (name, data) in enumerate(special.items())]


def write_imagefolder(root: Path) -> Path:
    for split, seed in (("train", 0), ("test", 1)):
        for name, data, label in rows(per_class=4, seed=seed, with_bad=True):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    return root


def write_parquet(root: Path, splits: tuple[str, ...] = ("train", "test")) -> Path:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    (root / "data").mkdir(parents=True)
    for seed, split in enumerate(splits):
        table = [{"image": {"bytes": data, "path": name}, "label": label}
                 for name, data, label in rows(per_class=4, seed=seed, with_bad=True)]
        path = root / "data" / f"{split}-00000-of-00001.parquet"
        datasets.Dataset.from_list(table, features=features).to_parquet(str(path))
    return root


@pytest.fixture(scope="module")
def bad_datasets(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bad")
    return {"imagefolder": write_imagefolder(tmp / "folder"), "parquet": write_parquet(tmp / "pq")}


GOOD_PER_SPLIT = 4 * len(CLASSES) + len(odd_files())  # what survives of each split


# --- decode_image ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_a_bad_file_raises_bad_image_naming_it(name):
    with pytest.raises(BadImage, match=f"'{name}'"):
        decode_image({"bytes": bad_files()[name], "path": name}, size=16)


def test_a_bad_file_on_disk_is_named_by_its_path(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(bad_files()["truncated.jpg"])
    with pytest.raises(BadImage, match="broken.jpg.*truncated"):
        decode_image(str(path), size=16)


@pytest.mark.parametrize("name", sorted(odd_files()))
def test_odd_but_valid_images_decode_to_uint8_rgb(name):
    pixels = decode_image({"bytes": odd_files()[name], "path": name}, size=16, crop_pct=0.875)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.uint8


def test_the_undecoded_form_gives_the_pixels_of_the_decoded_one():
    data = odd_files()["cmyk.jpg"]
    decoded = datasets.Image().decode_example({"bytes": data, "path": None})
    assert torch.equal(decode_image({"bytes": data, "path": None}, 16), decode_image(decoded, 16))


# --- attach_decoding: map-style and streams, skip and raise --------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "stream"])
@pytest.mark.parametrize("layout", ["imagefolder", "parquet"])
def test_decoding_skips_bad_images_in_loader_workers(bad_datasets, layout, streaming, caplog):
    splits = load_splits(DataConfig(dataset=str(bad_datasets[layout]), streaming=streaming), seed=0)
    # Batches of 8: the last (rows 16-21) holds good images too, so no stand-in is added.
    loader = torch.utils.data.DataLoader(attach_decoding(splits.train, size=16), batch_size=8, num_workers=0,
                                         collate_fn=lambda items: items)
    with caplog.at_level(logging.WARNING):
        decoded = [item for batch in loader for item in batch]
    assert len(decoded) == GOOD_PER_SPLIT
    assert all(item["pixel_values"].shape == (3, 16, 16) for item in decoded)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3 and all(any(name in m for m in skipped) for name in bad_files())


def test_a_stream_holding_out_its_eval_images_skips_bad_ones_on_both_sides(tmp_path):
    data = write_parquet(tmp_path / "pq", splits=("train",))
    splits = load_splits(DataConfig(dataset=str(data), streaming=True, validation_size=0.3), seed=0)
    sizes = [len(list(attach_decoding(ds, size=8))) for ds in (splits.train, splits.eval)]
    assert sum(sizes) == GOOD_PER_SPLIT and min(sizes) > 0


def test_raise_stops_at_the_first_bad_image_naming_it(bad_datasets):
    splits = load_splits(DataConfig(dataset=str(bad_datasets["parquet"])), seed=0)
    decoded = attach_decoding(splits.train, size=16, on_bad_image="raise")
    with pytest.raises(BadImage, match="cannot decode image '(truncated.jpg|empty.png|notes.png)'"):
        decoded[list(range(len(decoded)))]


def test_a_batch_of_only_bad_images_yields_the_last_good_one_again(bad_datasets):
    splits = load_splits(DataConfig(dataset=str(bad_datasets["parquet"])), seed=0)
    decoded = attach_decoding(splits.train, size=16)
    bad = [i for i, image in enumerate(splits.train["image"]) if image["path"] in bad_files()]
    assert len(decoded.__getitems__([0])) == 1
    stand_in = decoded.__getitems__(bad)
    assert len(stand_in) == 1 and torch.equal(stand_in[0]["pixel_values"], decoded[0]["pixel_values"])


def test_raise_in_a_loader_worker_reaches_the_main_process_as_our_one_line(bad_datasets):
    splits = load_splits(DataConfig(dataset=str(bad_datasets["parquet"])), seed=0)
    decoded = attach_decoding(splits.train, size=16, on_bad_image="raise")
    loader = torch.utils.data.DataLoader(decoded, batch_size=32, num_workers=1, collate_fn=lambda items: items)
    with pytest.raises(BadImage) as raised:
        list(loader)
    assert str(raised.value).startswith("cannot decode image '") and "Traceback" not in str(raised.value)


# --- The real command line, to the end -------------------------------------------------------------------


def bad_image_recipe(tmp_path: Path, data: Path, **data_keys) -> Path:
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=3, eval_strategy="no", save_strategy="no",
                         per_device_eval_batch_size=32)
    recipe["data"].update(data_keys)
    return write_recipe(tmp_path, recipe)


@pytest.mark.parametrize("layout, data_keys", [
    ("imagefolder", {}),
    ("parquet", {"loader": "decode"}),
    ("parquet", {"streaming": True}),
], ids=["imagefolder-decoded-once", "parquet-decoded-in-workers", "parquet-streamed"])
def test_a_run_over_bad_images_completes_with_skip(bad_datasets, tmp_path, layout, data_keys):
    recipe = bad_image_recipe(tmp_path, bad_datasets[layout], **data_keys)
    assert main([str(recipe)]) == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert 0 <= results["eval_accuracy"] <= 1
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("layout", ["imagefolder", "parquet"])
def test_a_run_over_bad_images_with_raise_is_a_clear_error(bad_datasets, tmp_path, layout, capsys):
    recipe = bad_image_recipe(tmp_path, bad_datasets[layout], on_bad_image="raise")
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "error: cannot decode image" in err and any(name in err for name in bad_files())
    assert "Traceback" not in err and not (tmp_path / "out" / "model.safetensors").exists()
