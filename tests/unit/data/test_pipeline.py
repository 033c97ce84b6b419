"""From splits to what the Trainer iterates: the store, the DataLoader settings that fit it, streams in order."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from tests.helpers.datagen import make_imagefolder, make_parquet_dataset, make_saved_dataset
from vit_hf.data.decode import decode_image
from vit_hf.data.loaders import LoaderRequest, batch_collator, choose_loader, loader_settings
from vit_hf.data.pipeline import plan_loader, prepare
from vit_hf.data.sources import load_splits
from vit_hf.data.stream_resume import StreamPosition, rows_handed_out
from vit_hf.recipe.schema import DataConfig
from vit_hf.training.build import with_loader_settings

datasets.disable_progress_bars()
CUDA = torch.device("cuda")  # a device object only: nothing here runs on it


def args(tmp_path, **values) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **values)


@pytest.mark.parametrize("kind", ["device", "memory", "mmap"])
def test_a_gather_store_on_cuda_gets_no_workers_and_never_pins_device_batches(kind):
    # torch's DataLoader pins every batch when pin_memory is on, and pinning a CUDA tensor raises; with
    # 0 workers, persistent_workers and prefetch_factor raise too.
    request = LoaderRequest(num_workers=4, persistent_workers=True, prefetch_factor=4, pin_memory=True,
                            explicit=frozenset({"num_workers", "persistent_workers", "prefetch_factor"}))
    settings, notes = loader_settings(kind, CUDA, request)
    assert settings.num_workers == 0 and not settings.persistent_workers and settings.prefetch_factor is None
    assert settings.pin_memory is (kind != "device")  # host batches pinned, device batches never
    assert settings.non_blocking
    assert any("dataloader_num_workers 4 -> 0" in note for note in notes)


def test_decoding_workers_stay_alive_and_pin_on_cuda_only():
    request = LoaderRequest(num_workers=3, prefetch_factor=4)
    on_gpu, _ = loader_settings("decode", CUDA, request)
    assert (on_gpu.num_workers, on_gpu.persistent_workers, on_gpu.prefetch_factor) == (3, True, 4)
    assert on_gpu.pin_memory
    on_cpu, _ = loader_settings("decode", torch.device("cpu"), request)
    assert not on_cpu.pin_memory and not on_cpu.non_blocking
    asked_off = LoaderRequest(num_workers=3, persistent_workers=False, explicit=frozenset({"persistent_workers"}))
    assert not loader_settings("decode", CUDA, asked_off)[0].persistent_workers  # the recipe's explicit value wins


def test_a_lone_stream_is_not_dispatched_by_accelerate():
    # accelerate would read every streamed batch on the main process and concatenate a copy of it.
    assert choose_loader("auto", True, 0, CUDA, LoaderRequest(num_workers=2)).settings.dispatch_batches is False
    assert choose_loader("auto", True, 0, CUDA, LoaderRequest(num_workers=2), world_size=8).settings.dispatch_batches \
        is None


def test_the_settings_reach_the_training_arguments_and_the_dataloader(tmp_path):
    # A recipe that asks for workers, prefetching and persistence, with a store that takes none of them:
    # before, TrainingArguments or torch's DataLoader refused the combination.
    splits = load_splits(DataConfig(dataset=str(make_imagefolder(tmp_path / "data", per_class=4))), seed=0)
    requested = dict(dataloader_num_workers=2, dataloader_prefetch_factor=4, dataloader_persistent_workers=True)
    base = args(tmp_path / "out", **requested)
    choice = plan_loader(DataConfig(dataset="x", loader="memory"), splits, 16, base, requested)
    final = with_loader_settings(base, choice.settings, requested)
    assert (final.dataloader_num_workers, final.dataloader_prefetch_factor) == (0, None)
    assert not final.dataloader_persistent_workers and not final.dataloader_pin_memory  # no CUDA here
    assert base.dataloader_num_workers == 2  # the arguments given are left as they were
    prepared = prepare(DataConfig(dataset="x", loader="memory", cache_dir=str(tmp_path / "cache")), splits, 16, 1.0,
                       choice, final)
    loader = torch.utils.data.DataLoader(prepared.train, batch_size=4, num_workers=final.dataloader_num_workers,
                                         persistent_workers=final.dataloader_persistent_workers,
                                         prefetch_factor=final.dataloader_prefetch_factor, collate_fn=batch_collator)
    assert next(iter(loader))["pixel_values"].dtype == torch.uint8


def test_a_recipe_accelerator_config_wins_over_the_loader_defaults(tmp_path):
    settings, _ = loader_settings("decode", CUDA, LoaderRequest(), lone_stream=True)
    base = args(tmp_path, accelerator_config={"dispatch_batches": True})
    final = with_loader_settings(base, settings, {"accelerator_config": {"dispatch_batches": True}})
    assert final.accelerator_config.dispatch_batches is True and final.accelerator_config.non_blocking is True


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    # Eval at crop_pct 0.5 (a zoomed-in center crop) makes the train geometry (the whole image) visible.
    root = make_parquet_dataset(tmp_path_factory.mktemp("stream"), per_class=8, size=24, shards=4)
    cfg = DataConfig(dataset=str(root), streaming=True, shuffle_buffer=8)
    return cfg, load_splits(cfg, seed=0)


def order(stream, epoch: int) -> list[bytes]:
    stream.set_epoch(epoch)
    return [row["pixel_values"].numpy().tobytes() for row in stream]


def test_a_training_stream_is_shuffled_reproducibly_and_anew_each_epoch(streamed, tmp_path):
    cfg, splits = streamed
    settings = choose_loader("auto", True, 0, torch.device("cpu")).settings
    prepared = prepare(cfg, splits, 16, 0.5, choose_loader("auto", True, 0, torch.device("cpu")), args(tmp_path))
    assert settings.num_workers == 0
    in_file_order = [decode_image(row["image"], 16, 1.0).numpy().tobytes() for row in splits.train]
    first, again, second = order(prepared.train, 0), order(prepared.train, 0), order(prepared.train, 1)
    assert sorted(first) == sorted(in_file_order)  # every image once per epoch
    assert first != in_file_order and second != first  # shuffled, and reshuffled for the next epoch
    assert again == first  # seeded: a resumed run sees the same order
    reseeded = prepare(cfg, splits, 16, 0.5, choose_loader("auto", True, 0, torch.device("cpu")),
                       args(tmp_path, seed=1))
    assert order(reseeded.train, 0) != first


def test_a_training_stream_is_decoded_with_the_train_geometry(streamed, tmp_path):
    cfg, splits = streamed
    prepared = prepare(cfg, splits, 16, 0.5, choose_loader("auto", True, 0, torch.device("cpu")), args(tmp_path))
    train_pixels = {row["pixel_values"].numpy().tobytes() for row in prepared.train}
    whole = {decode_image(row["image"], 16, 1.0).numpy().tobytes() for row in splits.train}
    assert train_pixels == whole  # the whole image, as the cache stores the train split; not the eval crop
    eval_pixels = next(iter(prepared.eval))["pixel_values"].numpy()
    first_eval = next(iter(splits.eval))["image"]
    np.testing.assert_array_equal(eval_pixels, decode_image(first_eval, 16, 0.5).numpy())


# --- A resumed stream continues where it stopped, without decoding what it skips ---------------------------


@pytest.fixture(scope="module")
def saved_stream(tmp_path_factory):
    # A save_to_disk folder streams in shards (sources.py); a parquet stream would sleep 5 s at each pass's end
    # (datasets' wait for pyarrow's threads), which the resumed passes below would add up.
    root = make_saved_dataset(tmp_path_factory.mktemp("saved") / "ds", per_class=8, size=24)
    cfg = DataConfig(dataset=str(root), streaming=True, shuffle_buffer=8, validation_size=0.25)
    return cfg, load_splits(cfg, seed=0)


def batches_of(stream, workers: int, epoch: int = 0) -> list[bytes]:
    """The stream's batches of 3, as the Trainer's DataLoader hands them out (in turn from the workers)."""
    stream.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(stream, batch_size=3, num_workers=workers)
    return [batch["pixel_values"].numpy().tobytes() for batch in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_at_its_batch_and_pass(saved_stream, tmp_path, workers):
    cfg, splits = saved_stream

    def stream():
        return prepare(cfg, splits, 16, 1.0, choose_loader("auto", True, 0, torch.device("cpu")), args(tmp_path)).train

    first_pass, second_pass = batches_of(stream(), workers), batches_of(stream(), workers, epoch=1)
    assert len(first_pass) >= 5 and first_pass != second_pass
    resumed = stream()
    resumed.resume_at(StreamPosition(passes=0, batches=3), batch_size=3)
    rest = batches_of(resumed, workers)
    # Each worker goes on after the batches it had handed out; the turns restart at worker 0, so with
    # workers the rest of the pass comes in another interleaving.
    assert (rest == first_pass[3:]) if workers == 0 else (sorted(rest) == sorted(first_pass[3:]))
    assert batches_of(resumed, workers, epoch=1) == second_pass  # the next pass is whole, and reshuffled
    later = stream()
    later.resume_at(StreamPosition(passes=1, batches=0), batch_size=3)
    assert batches_of(later, workers) == second_pass


def test_workers_beyond_a_streams_shards_hand_out_nothing_and_the_others_share_its_batches():
    def worker(i: int, of: int):
        return SimpleNamespace(id=i, num_workers=of)  # the fields of torch's WorkerInfo that count

    # 64 shards, 4 workers: 7 batches came from workers 0, 1, 2, 3, 0, 1, 2 (batches of 3 rows)
    assert [rows_handed_out(7, 3, worker(i, 4), shards=64) for i in range(4)] == [6, 6, 6, 3]
    # 2 shards, 4 workers: datasets stops workers 2 and 3; the 7 came from workers 0, 1, 0, 1, 0, 1, 0
    assert [rows_handed_out(7, 3, worker(i, 4), shards=2) for i in range(4)] == [12, 9, 0, 0]
    assert rows_handed_out(7, 3, None, shards=2) == 21  # no workers: the main process handed out all


def test_a_resumed_stream_with_fewer_shards_than_workers_continues_at_its_batch(saved_stream, tmp_path):
    cfg, _ = saved_stream
    mapped = load_splits(dataclasses.replace(cfg, streaming=False), seed=0)
    splits = dataclasses.replace(mapped, train=mapped.train.to_iterable_dataset(num_shards=2))

    def stream():
        return prepare(cfg, splits, 16, 1.0, choose_loader("auto", True, 0, torch.device("cpu")), args(tmp_path)).train

    first_pass = batches_of(stream(), workers=3)  # worker 2 has no shard: 0 and 1 take turns
    resumed = stream()
    resumed.resume_at(StreamPosition(passes=0, batches=3), batch_size=3)
    assert sorted(batches_of(resumed, workers=3)) == sorted(first_pass[3:])


def test_the_rows_a_resumed_stream_skips_are_never_decoded(saved_stream, tmp_path):
    cfg, splits = saved_stream
    stream = prepare(cfg, splits, 16, 1.0, choose_loader("auto", True, 0, torch.device("cpu")), args(tmp_path)).train
    total = len(list(stream))
    decoded = []
    decode = stream.decoder.decoding
    stream.decoder.decoding = lambda image: decoded.append(image) or decode(image)  # counts, then decodes
    stream.resume_at(StreamPosition(passes=0, batches=2), batch_size=3)
    assert len(list(stream)) == total - 6 and len(decoded) == total - 6  # the 6 skipped rows were not decoded


def test_gpu_decode_on_a_cache_is_a_clear_error(tmp_path):
    # (gpu_decode without CUDA or torchvision: the CLI's preflight, tests/unit/cli/test_preflight.py)
    from vit_hf.errors import RecipeError
    from vit_hf.recipe.load import load_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {dataset: x, gpu_decode: true}\nmodel: {preset: vit-tiny}\ntraining: {output_dir: o}\n")
    with pytest.raises(RecipeError, match="data.gpu_decode decodes streams and data.loader: decode"):
        load_recipe(recipe)
