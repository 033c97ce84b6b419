"""Test accuracy a wall-clock budget buys on CIFAR-10: a vit_hf recipe against the standard HF recipe.

    python benchmarks/cifar10_budget.py [--recipe recipes/cifar10_cpu_10m.yaml] [--budget 600]
        [--dataset ../shared/datasets/cifar10] [--python .venv/bin/python]

(1) vit_hf: `python -m vit_hf.run RECIPE --budget.time BUDGET` (the whole process inside the budget).
(2) baseline: the same model (the recipe's ViTConfig and model options, conv stem included) trained for the same
    wall time by the
    transformers image-classification example's recipe: per-image PIL transforms in `set_transform`
    (RandomResizedCrop, flip, normalize; eval: resize + center crop), Trainer defaults (AdamW,
    lr 5e-5, batch 8, no warmup, dataloader_num_workers 0), and a step-based cosine schedule sized for
    the budget from its throughput measured after warm-up (the best a user of the example can do without vit_hf's
    time-mapped schedule). Its evaluation on the test set is inside its budget too.
Both run one after the other on this machine. Last line: `accuracy: X.XXXX baseline: Y.YYYY`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


class Deadline(TrainerCallback):
    """The same wall time for the baseline: stop when only its final evaluation's time is left."""

    def __init__(self, stop_at: float):
        self.stop_at = stop_at

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = time.monotonic() >= self.stop_at


class StepClock(TrainerCallback):
    """When each step ended: per-step time after warm-up (the first steps pay one-off set-up)."""

    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.monotonic())


def run_vit_hf(python: str, recipe: str, dataset: str, budget: int, out: Path) -> tuple[float, float]:
    command = [python, "-m", "vit_hf.run", recipe, "--data.dataset", dataset, "--budget.time", f"{budget}s",
               "--training.output_dir", str(out), "--resume", "never"]
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "eval_results.json").read_text())["eval_accuracy"], time.monotonic() - started


def run_baseline(recipe_path: str, dataset: str, budget: int, out: Path) -> tuple[float, float]:
    """The HF example's data path and Trainer defaults, cosine sized from a throughput probe, same wall time."""
    import torch
    from data_throughput import hf_example_transform
    from transformers import Trainer, TrainingArguments

    from vit_hf.data.decode import decode_image
    from vit_hf.data.sources import load_splits
    from vit_hf.modeling.build import build_model
    from vit_hf.recipe.load import load_recipe
    from vit_hf.recipe.schema import DataConfig
    from vit_hf.training.metrics import load_metrics, top_k_predictions

    started = time.monotonic()
    recipe = load_recipe(recipe_path, ["--data.dataset", dataset])
    compute_metrics = load_metrics(recipe.evaluation.metrics)
    splits = load_splits(DataConfig(dataset=dataset), seed=0)
    size = recipe.data.image_size
    names = splits.label_names
    torch.manual_seed(0)
    model = build_model(recipe.model, recipe.vit_config, names, size)  # the recipe's model: stem, pool, posemb too
    mean = std = [0.5, 0.5, 0.5]  # the example takes them from google/vit-base's image processor
    train = splits.train.with_transform(hf_example_transform(size, mean, std))

    def eval_transform(batch):  # the example's eval transforms: resize + center crop, normalize
        pixels = [(decode_image(image, size).float() / 255 - 0.5) / 0.5 for image in batch["image"]]
        return {"pixel_values": pixels, "labels": batch["label"]}

    evaluation = splits.eval.with_transform(eval_transform)

    clock, probe_steps, probe_images = StepClock(), 30, 1000
    args = dict(output_dir=str(out), report_to="none", remove_unused_columns=False, save_strategy="no",
                use_cpu=not torch.cuda.is_available(), disable_tqdm=True, logging_steps=50)
    probe = Trainer(model=model, args=TrainingArguments(max_steps=probe_steps, **args), train_dataset=train,
                    compute_metrics=compute_metrics, preprocess_logits_for_metrics=top_k_predictions,
                    callbacks=[clock])
    probe.train()
    per_step = (clock.times[-1] - clock.times[9]) / (len(clock.times) - 10)
    t0 = time.monotonic()  # the final evaluation's time, from its rate on a slice of the same data path
    probe.evaluate(eval_dataset=splits.eval.select(range(probe_images)).with_transform(eval_transform))
    eval_seconds = (time.monotonic() - t0) * len(evaluation) / probe_images
    left = budget - (time.monotonic() - started) - eval_seconds
    steps = max(1, int(left / per_step))
    trainer = Trainer(model=model, args=TrainingArguments(max_steps=steps, lr_scheduler_type="cosine", **args),
                      train_dataset=train, eval_dataset=evaluation, compute_metrics=compute_metrics,
                      preprocess_logits_for_metrics=top_k_predictions,
                      callbacks=[Deadline(started + budget - eval_seconds)])
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    return accuracy, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/cifar10_cpu_10m.yaml")
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--skip-baseline", action="store_true")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cifar10_budget_"))
    accuracy, seconds = run_vit_hf(opts.python, opts.recipe, opts.dataset, opts.budget, work / "vit_hf")
    print(f"vit_hf {opts.recipe}: test accuracy {accuracy:.4f} in {seconds:.0f} s wall ({opts.budget} s budget)")
    baseline = float("nan")
    if not opts.skip_baseline:
        baseline, seconds = run_baseline(opts.recipe, opts.dataset, opts.budget, work / "baseline")
        print(f"HF example recipe, same model: test accuracy {baseline:.4f} in {seconds:.0f} s wall")
    print(f"accuracy: {accuracy:.4f} baseline: {baseline:.4f}")


if __name__ == "__main__":
    main()
