"""ImageNet's data path on this machine, per core, side by side, on ImageNet-like JPEGs generated here.

    python benchmarks/imagenet_datapath.py [--images 2000] [--size 176] [--workers N] [--keep DIR]

The JPEGs: tests/helpers/datagen.photo_like_jpeg (ImageNet's sizes: most 500 px on the longer side, the
rest 300-800 px; ~95 KB at quality 90; mosaics of scikit-learn's two sample photos, also at half scale,
with sensor-like noise: photographic high-frequency content, nothing upscaled), in an imagefolder.

(a) hf_example: the transformers image-classification example's path, per image: datasets decodes the
    whole JPEG (PIL), then RandomResizedCrop to 224, flip, ToTensor, Normalize
    (benchmarks/data_throughput.hf_example_transform), in one process.
(b) cache build: vit_hf's decode-once cache of the train split at --size (JPEGs decoded reduced where
    they are at least twice the size, resized with torch's uint8 bicubic, written by datasets.map in
    shards), on --workers processes (default: every core), timed from the plan to the dataset read back.
(c) mmap read: the Trainer's own train DataLoader over the memory-mapped cache, random order, batch 256,
    uint8 at --size: what reaches the training step, before the device's augmentation.
(d) stream decode: the same JPEGs in parquet shards (bytes inside, as on the Hub), streamed, shuffled,
    decoded with the training geometry in --workers DataLoader workers, batch 256.

Each is measured twice, alternating, and the faster kept (the machine is shared: compare ratios, within
one run). Per core: one process on one core, for (a) and (b) alike; the build on every core shows how
it scales (on a machine whose other cores are busy with other work, it cannot). Last line:
`cache_build_speedup: X mmap_read_img_s: Y`, X the cache build's images/s per core over the HF path's
(goal >= 2), Y (c)'s images/s (goal >= 20,000 at 176 px on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from data_throughput import hf_example_transform  # noqa: E402
from transformers import TrainingArguments, ViTConfig, ViTForImageClassification  # noqa: E402

from tests.helpers.datagen import make_imagenet_like  # noqa: E402
from vit_hf.data.cache import build_cache, bytes_per_image, plan_cache  # noqa: E402
from vit_hf.data.loaders import batch_collator, make_store  # noqa: E402
from vit_hf.data.pipeline import train_decoding  # noqa: E402
from vit_hf.data.pool import available_cores  # noqa: E402
from vit_hf.data.sources import load_splits  # noqa: E402
from vit_hf.recipe.schema import DataConfig  # noqa: E402
from vit_hf.training.trainer import VitTrainer  # noqa: E402

BATCH = 256
IMAGENET_TRAIN, IMAGENET_EVAL = 1_281_167, 50_000
CLASSES = tuple(f"n{i:08d}" for i in range(10))


def best_of(runs: int, measure) -> float:
    return max(measure() for _ in range(runs))


def hf_example_rate(train: datasets.Dataset) -> float:
    """(a): images/s of the HF example's per-image transform over datasets' own decoding, one process."""
    decoded = train.cast_column("image", datasets.Image()).with_transform(hf_example_transform(224))
    start = time.perf_counter()
    for i in range(0, len(decoded), 32):
        decoded[i:i + 32]
    return len(decoded) / (time.perf_counter() - start)


def cache_build_rate(train: datasets.Dataset, cfg: DataConfig, size: int, workers: int,
                     scratch: Path) -> tuple[float, datasets.Dataset]:
    """(b): images/s of a fresh build of the train split's cache on `workers` processes."""
    folder = Path(tempfile.mkdtemp(prefix="cache_", dir=scratch))
    start = time.perf_counter()
    cached = build_cache(plan_cache(train, train_decoding(cfg, size), folder, name="train"), workers)
    return len(train) / (time.perf_counter() - start), cached


def mmap_read_rate(cached: datasets.Dataset, batches: int, scratch: Path) -> float:
    """(c): uint8 batches from the Trainer's train DataLoader over the mmap store, random order."""
    store = make_store(cached, "mmap", torch.device("cpu"))
    config = ViTConfig(image_size=16, patch_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                       intermediate_size=8, num_labels=len(CLASSES))
    args = TrainingArguments(output_dir=tempfile.mkdtemp(dir=scratch), per_device_train_batch_size=BATCH, use_cpu=True,
                             dataloader_num_workers=0, remove_unused_columns=False, report_to="none")
    trainer = VitTrainer(model=ViTForImageClassification(config), args=args, train_dataset=store,
                         data_collator=batch_collator)
    loader = trainer.get_train_dataloader()
    seen, start = 0, time.perf_counter()
    while seen < batches * BATCH:
        for batch in loader:
            seen += len(batch["labels"])
    return seen / (time.perf_counter() - start)


STREAM_SHARDS = 8


def write_parquet_shards(train: datasets.Dataset, folder: Path) -> Path:
    """The train split as parquet shards with the JPEG bytes inside (a local imagefolder streams as one shard)."""
    rows = [{"image": {"bytes": Path(image["path"]).read_bytes(), "path": Path(image["path"]).name}, "label": label}
            for image, label in zip(train["image"], train["label"])]
    features = datasets.Features({"image": datasets.Image(), "label": train.features["label"]})
    table = datasets.Dataset.from_list(rows, features=features)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for i in range(STREAM_SHARDS):
        table.shard(STREAM_SHARDS, i, contiguous=True).to_parquet(
            str(folder / "data" / f"train-{i:05d}-of-{STREAM_SHARDS:05d}.parquet"))
    return folder


def stream_decode_rate(parquet: Path, size: int, workers: int, images: int, scratch: Path) -> float:
    """(d): images/s decoded from the streamed parquet shards, shuffled, in `workers` DataLoader workers."""
    from vit_hf.data.loaders import choose_loader
    from vit_hf.data.pipeline import prepare

    cfg = DataConfig(dataset=str(parquet), streaming=True, storage_size=size, shuffle_buffer=256, validation_size=0.01)
    splits = load_splits(cfg, seed=0)
    wanted = int(0.9 * images)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(dir=scratch), use_cpu=True, report_to="none")
    stream = prepare(cfg, splits, size, 1.0, choose_loader("auto", True, 0, torch.device("cpu")), args).train
    loader = torch.utils.data.DataLoader(stream, batch_size=BATCH, num_workers=workers)
    # Timed over the first 90%: at its end a parquet stream's worker sleeps 5 s (datasets' wait for pyarrow's
    # threads, SLEEP_TIME_ON_THREADS_SHUTDOWN), once per pass, which would swamp a benchmark this short.
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch["labels"])
        if seen >= wanted:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000, help="train images generated (plus 10 per class to eval)")
    parser.add_argument("--size", type=int, default=176, help="data.storage_size")
    parser.add_argument("--workers", type=int, default=available_cores(), help="cache and stream processes")
    parser.add_argument("--runs", type=int, default=2, help="measurements of each path; the fastest is kept")
    parser.add_argument("--keep", help="generate the JPEGs into this folder, and reuse them when it exists")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    torch.set_num_threads(1)  # one core for the single-process paths; the cache's pool sets its own
    scratch = Path(tempfile.mkdtemp(prefix="imagenet_datapath_"))  # every folder of this run but --keep's
    try:
        report(args, measure(args, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(args, scratch: Path) -> dict[str, float]:
    """Each path's best images/s (see the module's docstring)."""
    root = Path(args.keep) if args.keep else scratch / "imagenet_like"
    if not (root / "train").is_dir():
        started = time.perf_counter()
        make_imagenet_like(root, classes=CLASSES, per_class=args.images // len(CLASSES), eval_per_class=10)
        print(f"generated {args.images} ImageNet-like JPEGs in {time.perf_counter() - started:.0f} s: {root}")
    cfg = DataConfig(dataset=str(root), storage_size=args.size)
    train = load_splits(cfg, seed=0).train
    sizes = [path.stat().st_size for path in sorted((root / "train").glob("*/*.JPEG"))]
    print(f"{len(sizes)} JPEGs, mean {np.mean(sizes) / 1e3:.0f} KB (min {min(sizes) / 1e3:.0f}, max "
          f"{max(sizes) / 1e3:.0f})")
    hf, build, build_1 = [], [], []
    for _ in range(args.runs):  # alternating, so that the machine's load falls on every path alike
        hf.append(hf_example_rate(train))
        rate, cached = cache_build_rate(train, cfg, args.size, args.workers, scratch)
        build.append(rate)
        build_1.append(cache_build_rate(train, cfg, args.size, 1, scratch)[0])
    mmap = best_of(args.runs, lambda: mmap_read_rate(cached, 40, scratch))
    parquet = write_parquet_shards(train, scratch / "parquet")
    stream = best_of(args.runs, lambda: stream_decode_rate(parquet, args.size, args.workers, len(train), scratch))
    return {"hf_example": max(hf), "cache_build": max(build), "cache_build_1": max(build_1), "mmap_read": mmap,
            "stream_decode": stream}


def report(args, rates: dict[str, float]) -> None:
    rows = {
        "(a) hf_example: PIL full decode + RandomResizedCrop 224 + ToTensor/Normalize": (rates["hf_example"], 1),
        f"(b) vit_hf cache build at {args.size} px, {args.workers} processes": (rates["cache_build"], args.workers),
        f"(b) vit_hf cache build at {args.size} px, 1 process": (rates["cache_build_1"], 1),
        f"(c) vit_hf mmap read at {args.size} px (Trainer loader, random order)": (rates["mmap_read"], 1),
        f"(d) vit_hf stream decode at {args.size} px, {args.workers} workers": (rates["stream_decode"], args.workers),
    }
    print(f"\nimages/s on {available_cores()} cores ({args.images} train images; best of {args.runs}):")
    for name, (rate, processes) in rows.items():
        print(f"  {name:78s} {rate:9,.0f} img/s  {rate / processes:8,.0f} per core")
    per_core_build = rates["cache_build_1"]
    per_image = bytes_per_image(args.size)
    print(f"\nscaling: {rates['cache_build'] / (args.workers * per_core_build):.0%} of {args.workers} x the "
          "one-process build")
    print(f"ImageNet-1k from this machine's per-core build rate ({per_core_build:,.0f} img/s; an estimate):")
    for cores in (16, 32):
        print(f"  {cores} cores: train cache {IMAGENET_TRAIN * per_image / 1e9:.1f} GB in "
              f"{IMAGENET_TRAIN / (cores * per_core_build) / 60:.1f} min")
    print(f"  eval cache at 224 px: {IMAGENET_EVAL * bytes_per_image(224) / 1e9:.1f} GB")
    print(json.dumps(rates | {"workers": args.workers, "size": args.size}))
    print(f"cache_build_speedup: {per_core_build / rates['hf_example']:.2f} mmap_read_img_s: {rates['mmap_read']:.0f}")

if __name__ == "__main__":
    main()
