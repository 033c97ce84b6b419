"""budget.plan: auto against the best fixed recipe and the HF example recipe, for several budgets, on this machine.

    python benchmarks/auto_vs_fixed.py [--budgets 2,5,10] [--dataset ../shared/datasets/cifar10]
        [--fixed recipes/cifar10_cpu_10m.yaml] [--python .venv/bin/python] [--skip-baseline]

For each budget (minutes), one after the other on this machine, CIFAR-10 test accuracy of:
  auto        python -m vit_hf.run recipes/cifar10_auto.yaml --budget.time B (the plan is made inside B)
  best fixed  python -m vit_hf.run recipes/cifar10_cpu_10m.yaml --budget.time B: the shipped recipe sized for
              a CPU (the other shipped recipes are sized for GPUs: cifar10_tiny trains 10 steps in 150 s here)
  baseline    the HF image-classification example's recipe on cifar10_cpu_10m's model for the same wall time
              (benchmarks/cifar10_budget.py's run_baseline)
and whether each auto run ended inside its budget with the learning rate at its minimum.
Last line: `auto: A1/A2/A3 best_fixed: F1/F2/F3 baseline: B1/B2/B3`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cifar10_budget import run_baseline  # noqa: E402


def run_recipe(python: str, recipe: str, dataset: str, seconds: int, out: Path) -> dict:
    command = [python, "-m", "vit_hf.run", recipe, "--data.dataset", dataset, "--budget.time", f"{seconds}s",
               "--training.output_dir", str(out), "--resume", "never"]
    started = time.monotonic()
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run(command, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    state = json.loads((out / "trainer_state.json").read_text())
    lrs = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]
    planned = (out / "recipe.yaml").read_text()
    return {"accuracy": json.loads((out / "eval_results.json").read_text())["eval_accuracy"], "wall": wall,
            "epochs": state["epoch"], "lr_at_minimum": bool(lrs) and lrs[-1] <= max(lrs) * 1e-3,
            "model": _model_line(planned)}


def _model_line(recipe_yaml: str) -> str:
    model = yaml.safe_load(recipe_yaml)["model"]
    return (f"{model.get('stem')} {model.get('num_hidden_layers')}x{model.get('hidden_size')}"
            f"/{model.get('patch_size')}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="2,5,10", help="minutes, comma-separated")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--fixed", default="recipes/cifar10_cpu_10m.yaml")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--skip-baseline", action="store_true")
    opts = parser.parse_args()
    budgets = [float(m) for m in opts.budgets.split(",")]
    work = Path(tempfile.mkdtemp(prefix="auto_vs_fixed_"))
    table = []
    for minutes in budgets:
        seconds = int(minutes * 60)
        auto = run_recipe(opts.python, "recipes/cifar10_auto.yaml", opts.dataset, seconds, work / f"auto_{seconds}")
        fixed = run_recipe(opts.python, opts.fixed, opts.dataset, seconds, work / f"fixed_{seconds}")
        baseline = float("nan") if opts.skip_baseline else run_baseline(
            opts.fixed, opts.dataset, seconds, work / f"baseline_{seconds}")[0]
        table.append((minutes, auto, fixed, baseline))
        print(f"{minutes:g} min: auto {auto['accuracy']:.4f} ({auto['model']}, {auto['epochs']:.1f} epochs, "
              f"{auto['wall']:.0f} s wall, lr at minimum: {auto['lr_at_minimum']}) | fixed {fixed['accuracy']:.4f} "
              f"({fixed['epochs']:.1f} epochs, {fixed['wall']:.0f} s) | baseline {baseline:.4f}", flush=True)
    print("auto: " + "/".join(f"{a['accuracy']:.4f}" for _, a, _, _ in table)
          + " best_fixed: " + "/".join(f"{f['accuracy']:.4f}" for _, _, f, _ in table)
          + " baseline: " + "/".join(f"{b:.4f}" for _, _, _, b in table))


if __name__ == "__main__":
    main()
