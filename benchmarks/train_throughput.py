"""End-to-end training images/s against the model-only upper bound (a synthetic batch already on the device).

    python benchmarks/train_throughput.py [--dataset ../shared/datasets/cifar10] [--steps 20]
        [--model tiny|vit-tiny|cpu] [--loader auto] [--bf16] [--compile]

Both runs go through the same VitTrainer.train() with the same model, batch and precision; the
upper bound replaces the data path (decode-once cache, loader, device augmentation) by one
pre-made batch that lives on the device. Steps are timed after a warm-up, with the device
synchronized. Last line: `data_efficiency: 0.XX` (real / upper bound; 1.0 = the data path is free).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification  # noqa: E402

from vit_hf.augment.transform import build_eval_transform, build_train_augment  # noqa: E402
from vit_hf.data.loaders import UInt8Images, batch_collator  # noqa: E402
from vit_hf.data.pipeline import plan_loader, prepare  # noqa: E402
from vit_hf.data.sources import load_splits  # noqa: E402
from vit_hf.recipe.schema import DataConfig  # noqa: E402
from vit_hf.training.batches import RunOptions  # noqa: E402
from vit_hf.training.build import with_loader_settings  # noqa: E402
from vit_hf.training.trainer import VitTrainer  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
# "tiny": the cifar10_tiny recipe's plain ViT (9 x 192, MLP 384); "vit-tiny": ViT-Tiny/4 (the transformer of
# cifar10_hybrid, here with the patch stem); "cpu": small enough to time on a 2-core CPU
MODELS = {
    "tiny": dict(hidden_size=192, num_hidden_layers=9, num_attention_heads=12, intermediate_size=384),
    "vit-tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "cpu": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768),
}


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int):
        self.warmup, self.times = warmup, []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if state.global_step >= self.warmup:
            self.times.append(time.perf_counter())


class SyntheticOnDevice(UInt8Images):
    """The same uint8 batch every time, already on the device: no decode, no gather, no transfer."""

    def __init__(self, batch: int, size: int, device, length: int):
        pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        super().__init__(pixels, torch.randint(0, 10, (batch,), device=device))
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices):
        return {"pixel_values": self.pixels, "labels": self.labels}


def images_per_second(train_set, args: TrainingArguments, model_fields: dict, augment, steps: int,
                      warmup: int) -> float:
    config = ViTConfig(image_size=32, patch_size=4, num_labels=10, **model_fields)
    config._attn_implementation = "sdpa" if torch.cuda.is_available() else "eager"
    timer = StepTimer(warmup)
    trainer = VitTrainer(model=ViTForImageClassification(config), args=args, train_dataset=train_set,
                         data_collator=batch_collator, callbacks=[timer],
                         options=RunOptions(train_augment=augment, eval_transform=build_eval_transform(MEAN, STD)))
    trainer.train()
    span = timer.times[-1] - timer.times[0]
    return (len(timer.times) - 1) * args.per_device_train_batch_size / span


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--model", choices=list(MODELS), default="cpu" if not torch.cuda.is_available() else "tiny")
    parser.add_argument("--loader", default="auto")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true", help="training.torch_compile (the warm-up steps compile)")
    opts = parser.parse_args()

    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="train_throughput_"),
                             max_steps=opts.warmup + opts.steps,
                             per_device_train_batch_size=opts.batch, learning_rate=1e-3, bf16=opts.bf16,
                             use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
                             torch_compile=opts.compile,
                             logging_steps=10_000, remove_unused_columns=False, disable_tqdm=True)
    cfg = DataConfig(dataset=opts.dataset, image_size=32, crop="pad", pad=4, loader=opts.loader)
    augment = build_train_augment(cfg, MEAN, STD)
    splits = load_splits(cfg, seed=0)
    choice = plan_loader(cfg, splits, 32, args)
    args = with_loader_settings(args, choice.settings)  # e.g. no pinning of batches already on the GPU
    prepared = prepare(cfg, splits, 32, 1.0, choice, args)
    real = images_per_second(prepared.train, args, MODELS[opts.model], augment, opts.steps, opts.warmup)

    synthetic = SyntheticOnDevice(opts.batch, 32, args.device, length=opts.batch * (opts.warmup + opts.steps + 1))
    bound = images_per_second(synthetic, args, MODELS[opts.model], None, opts.steps, opts.warmup)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    print(f"training images/s, ViT ({opts.model}: {MODELS[opts.model]}) /4 at 32px, batch {opts.batch}, "
          f"{'bf16' if opts.bf16 else 'fp32'}{', compiled' if opts.compile else ''}, {device}, "
          f"loader {prepared.choice.kind}:")
    print(f"  vit_hf end to end (cache + loader + device augmentation): {real:10.0f} img/s")
    print(f"  model only (synthetic batch on the device, no augment):    {bound:10.0f} img/s")
    print(f"data_efficiency: {real / bound:.2f}")


if __name__ == "__main__":
    main()
