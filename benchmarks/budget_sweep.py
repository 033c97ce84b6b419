"""The evidence behind `budget.plan: auto`: accuracy per shape and budget on CIFAR-10, on this machine.

    python benchmarks/budget_sweep.py [--budgets 2,5,10,20] [--shapes vit-6x128/8,...]
        [--dataset ../shared/datasets/cifar10] [--results benchmarks/budget_sweep.json] [--python .venv/bin/python]
    python benchmarks/budget_sweep.py --fit     # the curves planning/rule.py holds, fitted to --results
                                                # and to rule.ANCHORS (published runs of hundreds of epochs)

Each cell is one `python -m vit_hf.run recipes/cifar10_cpu_10m.yaml` with the shape's model keys
(vit_hf/planning/candidates.py) and `--budget.time` minutes; everything else is that recipe's (light
augmentation, lr 1e-3 at batch 256, label smoothing 0.1, flip TTA), so a row differs from another only in
shape and budget. Scored on 5,000 images held out of the train split (data.eval_split: holdout): the rule
fitted from this table never looks at the test split. Each finished cell is appended to --results (JSON
lines) and skipped by a rerun, so the sweep can be stopped and continued. The table printed at the end has
the epochs each cell trained, which is what transfers to another machine: planning/rule.py reads accuracy
as a function of epochs per shape.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_hf.planning.candidates import BY_NAME  # noqa: E402
from vit_hf.planning.rule import ANCHORS, fit_curves  # noqa: E402

BASE_RECIPE = "recipes/cifar10_cpu_10m.yaml"
HOLDOUT = ["--data.eval_split", "holdout", "--data.validation_size", "5000"]
DEFAULT_SHAPES = "vit-6x128/8,hybrid-6x128/8,vit-9x192/4,vit-6x128/4"


def run_cell(python: str, dataset: str, shape_name: str, minutes: float, out: Path) -> dict:
    shape = BY_NAME[shape_name]
    model = [arg for key, value in shape.model_keys(32).items() for arg in (f"--model.{key}", str(value))]
    command = [python, "-m", "vit_hf.run", BASE_RECIPE, "--data.dataset", dataset, *HOLDOUT, *model,
               "--budget.time", f"{minutes}m", "--training.output_dir", str(out), "--resume", "never"]
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True, stdout=(out.parent / "log.txt").open("w"), stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    state = json.loads((out / "trainer_state.json").read_text())
    rates = [e["images_per_second"] for e in state["log_history"] if "images_per_second" in e]
    return {
        "shape": shape_name, "minutes": minutes, "epochs": round(state["epoch"], 2), "steps": state["global_step"],
        "images_per_second": round(rates[-1]) if rates else None,
        "accuracy": json.loads((out / "eval_results.json").read_text())["eval_accuracy"],
        "wall_seconds": round(wall, 1),
    }


def load_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def print_table(rows: list[dict], shapes: list[str], budgets: list[float]) -> None:
    cell = {(r["shape"], r["minutes"]): r for r in rows}
    print(f"{'shape':18} " + " ".join(f"{f'{m:g} min':>22}" for m in budgets))
    for name in shapes:
        shown = []
        for minutes in budgets:
            r = cell.get((name, minutes))
            shown.append(f"{r['accuracy']:.4f} @ {r['epochs']:5.1f} ep" if r else "-")
        print(f"{name:18} " + " ".join(f"{text:>22}" for text in shown))


def print_fit(rows: list[dict]) -> None:
    """error(E) = floor + scale * E^-decay per shape, one decay for all: the constants for planning/rule.py."""
    decay, curves = fit_curves([(r["shape"], r["epochs"], r["accuracy"]) for r in rows])
    print(f"DECAY = {decay:g}")
    print("CURVES = {")
    for name, (floor, scale, measured) in curves.items():
        points = [(r["epochs"], r["accuracy"]) for r in rows if r["shape"] == name] + ANCHORS.get(name, [])
        worst = max(abs(1 - a - floor - scale * e ** -decay) for e, a in points)
        print(f'    "{name}": ({floor:.4f}, {scale:.4f}, {measured:g}),  # {len(points)} points, '
              f"{min(e for e, _ in points):g}-{measured:g} epochs, worst miss {worst:.3f}")
    print("}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="2,5,10,20", help="minutes, comma-separated")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "budget_sweep.json"))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--fit", action="store_true", help="only fit the curves to --results and print them")
    opts = parser.parse_args()
    if opts.fit:
        print_fit(load_results(Path(opts.results)))
        return
    budgets = [float(m) for m in opts.budgets.split(",")]
    shapes = opts.shapes.split(",")
    results = Path(opts.results)
    done = {(r["shape"], r["minutes"]) for r in load_results(results)}
    for minutes in budgets:  # the short budgets of every shape first: a partial sweep already ranks them
        for name in shapes:
            if (name, minutes) in done:
                continue
            with tempfile.TemporaryDirectory(prefix="budget_sweep_") as tmp:
                row = run_cell(opts.python, opts.dataset, name, minutes, Path(tmp) / "out")
            with results.open("a") as file:
                file.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print_table(load_results(results), shapes, budgets)


if __name__ == "__main__":
    main()
