"""Images per second of the composed training augment (vit_hf/data/augment.py), for the record.

    python benchmarks/augment_throughput.py [--repeats 20]

For each device (CPU, and CUDA when present) and each recipe-like setting it times the full
uint8 -> normalized float32 transform on one batch, then Mixup/CutMix when the setting has them
(vit_hf/data/mixing.py), after a warm-up, and prints the median and the spread over the repeats.
CUDA timings use CUDA events, so they measure the kernels rather than the launch (and include the
stalls of the host syncs that RandAugment/TrivialAugment and mixing make once per call).
Nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from vit_hf.augment.mixing import build_mixing
from vit_hf.augment.transform import build_train_augment
from vit_hf.recipe.schema import IMAGENET_MEAN, IMAGENET_STD, DataConfig

CIFAR = DataConfig(crop="pad", pad=4, hflip=0.5)
RRC = DataConfig(crop="random_resized", hflip=0.5)
# DeiT's recipe (Touvron et al. 2021): RandAugment m9, random erasing 0.25, Mixup 0.8 / CutMix 1.0.
DEIT = DataConfig(
    crop="random_resized", hflip=0.5, auto_augment="randaugment", random_erasing=0.25, mixup_alpha=0.8, cutmix_alpha=1.0
)


def rrc_with(**ops) -> DataConfig:
    return DataConfig(crop="random_resized", hflip=0.5, **ops)


# (label, recipe data section); each runs at 32 px (batch 256) and 224 px (batch 64)
CASES = [
    ("cifar: pad 4 + flip", CIFAR),
    ("rrc + flip", RRC),
    ("rrc + flip + jitter 0.4", rrc_with(color_jitter=0.4)),
    ("rrc + flip + randaugment m9 n2", rrc_with(auto_augment="randaugment")),
    ("rrc + flip + trivialaugment", rrc_with(auto_augment="trivialaugment")),
    ("rrc + flip + erasing 0.25", rrc_with(random_erasing=0.25)),
    ("rrc + flip + mixup/cutmix", rrc_with(mixup_alpha=0.8, cutmix_alpha=1.0)),
    ("deit: rrc+flip+ra+erase+mix", DEIT),
]
SIZES = [(32, 256), (224, 64)]
NUM_CLASSES = 1000
WARMUP = 3


def train_transform(cfg: DataConfig, labels: torch.Tensor):
    """augment(images, generator), then Mixup/CutMix when the recipe has them: what VitTrainer runs per step."""
    augment = build_train_augment(cfg, IMAGENET_MEAN, IMAGENET_STD)
    mixing = build_mixing(cfg, NUM_CLASSES)

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pixels = augment(images, generator)
        return pixels if mixing is None else mixing(pixels, labels, generator)[0]

    return transform


def time_once(augment, images: torch.Tensor, generator: torch.Generator) -> float:
    """Seconds for one call, measured on the images' device."""
    if images.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        augment(images, generator)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start_s = time.perf_counter()
    augment(images, generator)
    return time.perf_counter() - start_s


def images_per_second(cfg: DataConfig, size: int, batch: int, device: torch.device, repeats: int) -> list[float]:
    augment = train_transform(cfg, labels=torch.arange(batch, device=device) % NUM_CLASSES)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device, generator=generator)
    for _ in range(WARMUP):
        time_once(augment, images, generator)
    return [batch / time_once(augment, images, generator) for _ in range(repeats)]


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case (after the warm-up)")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}; median images/s [min-max] over {args.repeats} batches\n")
    for device in devices:
        print(f"{device.type}: {hardware(device)}")
        for size, batch in SIZES:
            for label, cfg in CASES:
                rates = images_per_second(cfg, size, batch, device, args.repeats)
                print(
                    f"  {label:<32} {size:>3} px  batch {batch:>3}  "
                    f"{statistics.median(rates):>12,.0f}  [{min(rates):,.0f}-{max(rates):,.0f}]"
                )


if __name__ == "__main__":
    main()
