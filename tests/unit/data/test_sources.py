"""load_splits: every layout, column detection, label encoding, subsets, carve-outs, streams, errors."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from tests.helpers import SHARED_CIFAR10
from tests.helpers.datagen import (
    CLASSES,
    make_arrow_dataset,
    make_dataset_dict,
    make_imagefolder,
    make_parquet_dataset,
    make_saved_dataset,
)
from vit_hf.data.sources import load_splits
from vit_hf.data.splits import Splits
from vit_hf.errors import DataError
from vit_hf.recipe.schema import DataConfig

datasets.disable_progress_bars()

CIFAR10 = SHARED_CIFAR10
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
OUTPUT_FEATURES = {"image", "label"}


def load(path, seed: int = 0, **data) -> Splits:
    return load_splits(DataConfig(dataset=str(path), **data), seed)


def labels_of(ds) -> list[int]:
    return [row["label"] for row in ds.select_columns(["label"])]


def decoded(image: dict):
    """The splits' images are undecoded ({"bytes", "path"}): decode.py decodes them, guarded."""
    return datasets.Image().decode_example(image)


def pixels_of(ds) -> list[bytes]:
    """Each image's pixels, which identify the (noisy, all different) generated images."""
    return [decoded(row["image"]).tobytes() for row in ds]


def assert_shaped(ds, names: list[str]) -> None:
    assert set(ds.features) == OUTPUT_FEATURES
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"] == datasets.ClassLabel(names=names)


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> Path:
    """Hub layout, the cifar10 way: img column, plain_text/ folder, 2 train shards; 10 images per class and split."""
    return make_parquet_dataset(
        tmp_path_factory.mktemp("pq"), folder="plain_text", shards=2, image_column="img", per_class=10
    )


@pytest.fixture(scope="module")
def train_only_dir(tmp_path_factory) -> Path:
    """A single train split of 30 images per class, for carve-outs; 4 shards so that streams can use workers."""
    return make_parquet_dataset(tmp_path_factory.mktemp("train_only"), splits=("train",), per_class=30, shards=4)


# --- Layouts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, kwargs, expected_names",
    [
        (make_imagefolder, {}, list(CLASSES)),
        (make_parquet_dataset, {"image_column": "img"}, list(CLASSES)),
        (make_parquet_dataset, {"label_kind": "string"}, sorted(CLASSES)),
        (make_arrow_dataset, {"label_kind": "int"}, ["0", "1", "2"]),
        (make_saved_dataset, {}, list(CLASSES)),
        (make_parquet_dataset, {"folder": "plain_text", "shards": 3}, list(CLASSES)),
    ],
    ids=["imagefolder", "parquet-img", "parquet-strings", "arrow-ints", "save_to_disk", "parquet-shards"],
)
def test_each_layout_loads_with_its_names_and_counts(tmp_path, make, kwargs, expected_names):
    splits = load(make(tmp_path / "ds", per_class=4, **kwargs))
    assert splits.label_names == expected_names
    assert (len(splits.train), len(splits.eval)) == (12, 12)
    assert Counter(labels_of(splits.train)) == {0: 4, 1: 4, 2: 4}
    for ds in (splits.train, splits.eval):
        assert_shaped(ds, expected_names)
    assert decoded(splits.train[0]["image"]).size == (20, 20)


@pytest.mark.parametrize(
    "make", [lambda root: make_imagefolder(root, splits=None), lambda root: make_saved_dataset(root, single=True)]
)
def test_a_layout_without_splits_is_the_train_split_and_eval_is_carved_out(tmp_path, make):
    splits = load(make(tmp_path / "ds"), validation_size=3)
    assert (len(splits.train), len(splits.eval)) == (15, 3)
    assert Counter(labels_of(splits.eval)) == {0: 1, 1: 1, 2: 1}


def test_string_labels_get_the_same_ids_in_both_splits(tmp_path):
    root = tmp_path / "ds"
    (root / "data").mkdir(parents=True)
    image = make_dataset_dict(per_class=1, splits=("train",))["train"][0]["image"]
    for split, labels in (("train", ["zebra", "ant", "ant"]), ("test", ["moth", "zebra"])):
        rows = {"image": [image] * len(labels), "label": labels}
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
        path = root / "data" / f"{split}-00000-of-00001.parquet"
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    splits = load(root)
    assert splits.label_names == ["ant", "moth", "zebra"]
    assert labels_of(splits.train) == [2, 0, 0]
    assert labels_of(splits.eval) == [1, 2]


def test_integer_labels_are_named_up_to_the_largest_id_of_either_split(tmp_path):
    root = tmp_path / "ds"
    make_parquet_dataset(root, label_kind="int", splits=("train",), per_class=2)
    eval_rows = make_dataset_dict(label_kind="int", splits=("test",), classes=("a", "b", "c", "d"), per_class=1)
    eval_rows["test"].to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    splits = load(root)
    assert splits.label_names == ["0", "1", "2", "3"]
    assert splits.train.features["label"] == splits.eval.features["label"]


# --- Columns ----------------------------------------------------------------------------------------------


def test_columns_are_found_by_feature_type_when_their_names_are_unusual(tmp_path):
    splits = load(make_parquet_dataset(tmp_path / "ds", image_column="photo", label_column="kind"))
    assert splits.label_names == list(CLASSES)
    assert_shaped(splits.train, list(CLASSES))


def test_named_columns_are_used_and_other_columns_dropped(tmp_path):
    root = make_saved_dataset(tmp_path / "ds", image_column="photo", label_column="kind", label_kind="string")
    splits = load(root, image_column="photo", label_column="kind")
    assert_shaped(splits.eval, sorted(CLASSES))


def test_a_missing_label_column_is_an_error_that_lists_the_columns(tmp_path):
    root = make_parquet_dataset(tmp_path / "ds", label_column="kind", label_kind="int")
    with pytest.raises(DataError, match=r"data.label_column.*\['image', 'kind'\]"):
        load(root)


def test_a_named_column_that_does_not_exist_is_an_error_that_lists_the_columns(tmp_path):
    with pytest.raises(DataError, match=r"no column 'picture'.*\['image', 'label'\]"):
        load(make_parquet_dataset(tmp_path / "ds"), image_column="picture")


# --- Splits -------------------------------------------------------------------------------------------


def test_the_eval_split_defaults_to_test_and_can_be_named(parquet_dir):
    default, named = load(parquet_dir), load(parquet_dir, eval_split="train")
    assert pixels_of(default.eval) != pixels_of(default.train)
    assert pixels_of(named.eval) == pixels_of(named.train)


def test_a_missing_split_is_an_error_that_lists_the_splits(parquet_dir):
    with pytest.raises(DataError, match=r"no split 'validation'.*\['test', 'train'\]"):
        load(parquet_dir, eval_split="validation")
    with pytest.raises(DataError, match=r"no split 'training'.*\['test', 'train'\]"):
        load(parquet_dir, train_split="training")


def test_eval_only_loads_no_train_split(parquet_dir):
    splits = load_splits(DataConfig(dataset=str(parquet_dir), max_per_class=1), seed=0, need_train=False)
    assert splits.train is None and len(splits.eval) == 30


def test_the_carved_eval_split_is_stratified_seeded_and_disjoint(train_only_dir):
    first, again, other = (load(train_only_dir, seed=s, validation_size=0.2) for s in (1, 1, 2))
    assert (len(first.train), len(first.eval)) == (72, 18)
    assert Counter(labels_of(first.eval)) == {0: 6, 1: 6, 2: 6}
    assert pixels_of(first.eval) == pixels_of(again.eval)
    assert pixels_of(first.eval) != pixels_of(other.eval)
    assert not set(pixels_of(first.eval)) & set(pixels_of(first.train))


def test_class_proportions_are_kept_when_classes_are_unbalanced(tmp_path):
    full = make_dataset_dict(per_class=20, splits=("train",))["train"]
    unbalanced = full.select([i for i, label in enumerate(full["label"]) if label != 2 or i < 15])  # 20, 20, 5
    unbalanced.save_to_disk(str(tmp_path / "ds"))
    splits = load(tmp_path / "ds", validation_size=9)
    assert Counter(labels_of(splits.eval)) == {0: 4, 1: 4, 2: 1}


def test_holdout_carves_the_eval_split_out_of_train_even_when_a_test_split_exists(parquet_dir):
    default, holdout = load(parquet_dir), load(parquet_dir, eval_split="holdout", validation_size=0.2)
    assert len(holdout.train) + len(holdout.eval) == len(default.train)
    assert set(pixels_of(holdout.eval)) <= set(pixels_of(default.train))
    assert not set(pixels_of(holdout.eval)) & set(pixels_of(default.eval))


def test_a_validation_size_that_leaves_nothing_is_an_error(train_only_dir):
    with pytest.raises(DataError, match="validation_size=90"):
        load(train_only_dir, validation_size=90)


# --- Subsets ------------------------------------------------------------------------------------------


def test_classes_by_name_keep_and_renumber_them_in_the_given_order(parquet_dir):
    splits = load(parquet_dir, classes=["frog", "cat"])
    assert splits.label_names == ["frog", "cat"]
    for ds in (splits.train, splits.eval):
        assert_shaped(ds, ["frog", "cat"])
        assert Counter(labels_of(ds)) == {0: 10, 1: 10}
    frog_pixels = set(pixels_of(load(parquet_dir, classes=["frog"]).train))
    assert {p for p, label in zip(pixels_of(splits.train), labels_of(splits.train)) if label == 0} == frog_pixels


def test_classes_by_count_keep_the_first_label_ids(parquet_dir):
    splits = load(parquet_dir, classes=2)
    assert splits.label_names == ["cat", "dog"]
    assert Counter(labels_of(splits.eval)) == {0: 10, 1: 10}


@pytest.mark.parametrize(
    "classes, message", [(["cat", "cow"], r"\['cow'\].*\['cat', 'dog', 'frog'\]"), (4, "3 classes")]
)
def test_unknown_classes_are_an_error_naming_the_valid_ones(parquet_dir, classes, message):
    with pytest.raises(DataError, match=message):
        load(parquet_dir, classes=classes)


def test_max_per_class_caps_each_training_class_with_a_seeded_choice(parquet_dir):
    first, again, other = (load(parquet_dir, seed=s, max_per_class=3) for s in (0, 0, 1))
    assert Counter(labels_of(first.train)) == {0: 3, 1: 3, 2: 3}
    assert len(first.eval) == 30
    assert pixels_of(first.train) == pixels_of(again.train) != pixels_of(other.train)


def test_max_samples_keep_a_seeded_random_subset(parquet_dir):
    splits = load(parquet_dir, max_train_samples=7, max_eval_samples=5)
    assert (len(splits.train), len(splits.eval)) == (7, 5)
    assert pixels_of(splits.train) == pixels_of(load(parquet_dir, max_train_samples=7).train)
    assert len(set(labels_of(splits.train))) > 1  # a random choice, not the head of the file


def test_subsetting_reads_labels_only_never_images(parquet_dir, train_only_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(datasets.Image, "decode_example", refuse)
    load(parquet_dir, classes=["dog", "cat"], max_per_class=4, max_train_samples=5, max_eval_samples=3)
    load(train_only_dir, validation_size=0.1, classes=2)


# --- Streaming -------------------------------------------------------------------------------------------


def test_a_stream_has_the_map_style_names_and_examples(parquet_dir):
    streamed, mapped = load(parquet_dir, streaming=True), load(parquet_dir)
    assert isinstance(streamed.train, datasets.IterableDataset)
    assert streamed.label_names == mapped.label_names
    assert_shaped(streamed.train, mapped.label_names)
    assert sorted(pixels_of(streamed.eval)) == sorted(pixels_of(mapped.eval))


def test_a_stream_takes_max_samples_and_keeps_classes(parquet_dir):
    splits = load(parquet_dir, streaming=True, classes=["frog", "dog"], max_train_samples=5, max_eval_samples=4)
    assert splits.label_names == ["frog", "dog"]
    assert_shaped(splits.eval, ["frog", "dog"])
    assert len(labels_of(splits.train)) == 5 and len(labels_of(splits.eval)) == 4
    assert set(labels_of(load(parquet_dir, streaming=True, classes=["frog", "dog"]).eval)) == {0, 1}


def test_a_saved_dataset_streams_in_shards(tmp_path):
    splits = load(make_saved_dataset(tmp_path / "ds"), streaming=True)
    assert splits.train.num_shards > 1
    assert len(labels_of(splits.train)) == 18


def test_a_stream_without_eval_split_holds_out_the_same_images_whatever_the_epoch_or_workers(train_only_dir):
    splits = load(train_only_dir, streaming=True, validation_size=0.3)
    held_out = set(pixels_of(splits.eval))
    assert 10 < len(held_out) < 45  # about 27 of 90
    splits.train.set_epoch(3)
    assert not held_out & set(pixels_of(splits.train))
    loader = torch.utils.data.DataLoader(splits.train, batch_size=None, num_workers=2, collate_fn=lambda row: row)
    trained = set(pixels_of(loader))
    assert not held_out & trained and len(held_out | trained) == 90


def test_what_a_stream_cannot_do_is_an_error_that_says_what_to_do(tmp_path, parquet_dir):
    with pytest.raises(DataError, match="not a ClassLabel.*streaming: false"):
        load(make_parquet_dataset(tmp_path / "strings", label_kind="string"), streaming=True)
    with pytest.raises(DataError, match="max_per_class.*streaming: false"):
        load(parquet_dir, streaming=True, max_per_class=2)
    # Never loaded map-style, so no cached split sizes: the stream's length is unknown.
    with pytest.raises(DataError, match="length is unknown: give a fraction"):
        load(make_parquet_dataset(tmp_path / "train_only", splits=("train",)), streaming=True, validation_size=10)


# --- Sources that do not exist ------------------------------------------------------------------------


def test_a_missing_local_path_is_an_error_that_names_it_and_the_layouts(tmp_path):
    with pytest.raises(DataError, match=r"nowhere does not exist.*imagefolder.*save_to_disk"):
        load(tmp_path / "nowhere")


def test_an_unreachable_hub_id_is_a_data_error():  # offline (conftest.py), as any unknown id
    with pytest.raises(DataError, match="could not load 'nobody/no-such-dataset'.*parquet"):
        load("nobody/no-such-dataset")


# --- The real CIFAR-10 -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"{CIFAR10} is absent")
def test_cifar10_loads_map_style_and_streamed():
    from transformers import default_data_collator

    from vit_hf.data.decode import attach_decoding

    splits = load(CIFAR10)
    assert splits.label_names == CIFAR10_NAMES
    assert (len(splits.train), len(splits.eval)) == (50_000, 10_000)
    assert Counter(labels_of(splits.eval)) == {i: 1000 for i in range(10)}

    streamed = load(CIFAR10, streaming=True)
    assert streamed.label_names == CIFAR10_NAMES and streamed.train.num_shards == 8
    loader = torch.utils.data.DataLoader(
        attach_decoding(streamed.train, 32), batch_size=64, num_workers=2, collate_fn=default_data_collator
    )
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (64, 3, 32, 32) and batch["pixel_values"].dtype == torch.uint8
    assert batch["labels"].dtype == torch.int64 and set(batch["labels"].tolist()) <= set(range(10))
    assert np.std(batch["pixel_values"].float().numpy()) > 20  # real photos, not blanks


def test_a_class_with_eval_images_but_no_training_images_is_named_in_a_warning(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "data", per_class=3)
    make_imagefolder(root, classes=("cat", "dog", "frog", "newt"), per_class=2, splits=("test",), seed=1)
    with caplog.at_level(logging.WARNING, logger="vit_hf.data.sources"):
        splits = load_splits(DataConfig(dataset=str(root)), seed=0)
    assert "newt" in splits.label_names
    warned = [r.getMessage() for r in caplog.records if "no training images" in r.getMessage()]
    assert len(warned) == 1 and "'newt'" in warned[0] and "'cat'" not in warned[0]
