"""Images/s delivered to the training step (decode + augment + transfer), the HF example vs vit_hf.

    python benchmarks/data_throughput.py [--dataset ../shared/datasets/cifar10] [--batches 40]

(a) hf_example: the transformers image-classification example's data path: per-image PIL
    transforms in `set_transform` (RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize;
    written with PIL and numpy here, since torchvision is not a dependency) and the Trainer's
    default loader (dataloader_num_workers=0).
(b) vit_hf: each loader over the decode-once cache, batches through VitTrainer.training_inputs
    (batched random-resized-crop + flip + normalize on the training device).

All paths run in one process, one after the other, on the same split: compare the ratios (this
machine is shared and noisy). Last line: `speedup_vs_hf_example: X.X` (best vit_hf path).
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification  # noqa: E402

from vit_hf.augment.transform import build_eval_transform, build_train_augment  # noqa: E402
from vit_hf.data.decode import to_rgb  # noqa: E402
from vit_hf.data.loaders import batch_collator  # noqa: E402
from vit_hf.data.pipeline import plan_loader, prepare  # noqa: E402
from vit_hf.data.sources import load_splits  # noqa: E402
from vit_hf.recipe.schema import IMAGENET_MEAN, IMAGENET_STD, DataConfig  # noqa: E402
from vit_hf.training.batches import RunOptions  # noqa: E402
from vit_hf.training.build import with_loader_settings  # noqa: E402
from vit_hf.training.trainer import VitTrainer  # noqa: E402

SIZE, BATCH = 32, 256


def hf_example_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The example's train transform, per image, in PIL: RandomResizedCrop, flip, ToTensor, Normalize."""
    mean, std = np.array(mean, np.float32), np.array(std, np.float32)

    def one(image) -> torch.Tensor:
        image = to_rgb(image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image["bytes"])))
        w, h = image.size
        area = w * h * random.uniform(0.08, 1.0)
        ratio = np.exp(random.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = min(w, int(round((area * ratio) ** 0.5))), min(h, int(round((area / ratio) ** 0.5)))
        left, top = random.randint(0, w - cw), random.randint(0, h - ch)
        image = image.crop((left, top, left + cw, top + ch)).resize((size, size), Image.BILINEAR)
        if random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        array = (np.asarray(image, np.float32) / 255 - mean) / std
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def transform(batch):
        return {"pixel_values": [one(img) for img in batch["image"]], "labels": batch["label"]}

    return transform


def tiny_model() -> ViTForImageClassification:
    config = ViTConfig(image_size=SIZE, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, num_labels=10)
    return ViTForImageClassification(config)


def arguments(out: str, workers: int) -> TrainingArguments:
    return TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, dataloader_num_workers=workers,
                             remove_unused_columns=False, report_to="none", use_cpu=not torch.cuda.is_available())


def images_per_second(trainer: Trainer, batches: int) -> float:
    """Batches from the Trainer's own train loader, through its input preparation, timed after a warm-up."""
    loader = iter(trainer.get_train_dataloader())
    trainer.model.train()
    for _ in range(2):
        trainer.training_inputs(next(loader))
    _sync()
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        seen += len(trainer.training_inputs(next(loader))["pixel_values"])
    _sync()
    return seen / (time.perf_counter() - start)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the mmap and decode paths")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="data_throughput_")
    cfg = DataConfig(dataset=args.dataset, image_size=SIZE, crop="random_resized", hflip=0.5)
    splits = load_splits(cfg, seed=0)

    baseline_set = splits.train.with_transform(hf_example_transform(SIZE))
    baseline = Trainer(model=tiny_model(), args=arguments(out, 0), train_dataset=baseline_set)
    results = {"hf_example (PIL set_transform, 0 workers)": images_per_second(baseline, args.batches)}

    augment = build_train_augment(cfg, IMAGENET_MEAN, IMAGENET_STD)
    for loader, workers in (("memory", 0), ("mmap", args.workers), ("decode", args.workers)):
        training_args = arguments(out, workers)
        data = DataConfig(dataset=args.dataset, loader=loader)
        choice = plan_loader(data, splits, SIZE, training_args, ["dataloader_num_workers"])
        training_args = with_loader_settings(training_args, choice.settings)
        prepared = prepare(data, splits, SIZE, 1.0, choice, training_args)
        trainer = VitTrainer(model=tiny_model(), args=training_args, train_dataset=prepared.train,
                             data_collator=batch_collator,
                             options=RunOptions(train_augment=augment,
                                                eval_transform=build_eval_transform(IMAGENET_MEAN, IMAGENET_STD)))
        results[f"vit_hf {loader} ({training_args.dataloader_num_workers} workers)"] = images_per_second(
            trainer, args.batches)

    base = next(iter(results.values()))
    device = "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    print(f"images/s delivered to the training step, {SIZE}px, batch {BATCH}, {device}:")
    for name, rate in results.items():
        print(f"  {name:45s} {rate:10.0f} img/s  x{rate / base:5.1f}")
    print(f"speedup_vs_hf_example: {max(list(results.values())[1:]) / base:.1f}")


if __name__ == "__main__":
    main()
