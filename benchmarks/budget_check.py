"""Does a budgeted run end on time, anneal to the end, and survive SIGKILL + rerun on the same budget?

    python benchmarks/budget_check.py [--recipe recipes/cifar10_cpu_10m.yaml] [--budget 90]
        [--dataset ../shared/datasets/cifar10] [--python .venv/bin/python]

Three processes of `python -m vit_hf.run`: (1) uninterrupted; (2) killed with SIGKILL at half the
budget; (3) the same command rerun, resuming. Prints wall times against the budget, the last logged
learning rate against the peak, and the step counts. Numbers, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(python: str, recipe: str, dataset: str, budget: int, out: Path, log: Path) -> subprocess.Popen:
    command = [python, "-m", "vit_hf.run", recipe, "--data.dataset", dataset, "--budget.time", f"{budget}s",
               "--training.output_dir", str(out)]
    return subprocess.Popen(command, cwd=ROOT, stdout=log.open("a"), stderr=subprocess.STDOUT)


def history(out: Path) -> tuple[int, float, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    lrs = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]
    return state["global_step"], max(lrs), lrs[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/cifar10_cpu_10m.yaml")  # a recipe sized for a CPU
    parser.add_argument("--budget", type=int, default=90)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="budget_check_"))

    started = time.monotonic()
    code = launch(args.python, args.recipe, args.dataset, args.budget, work / "whole", work / "whole.log").wait()
    whole = time.monotonic() - started
    steps, peak, last = history(work / "whole")
    print(f"uninterrupted: exit {code}, {whole:.1f} s wall for a {args.budget} s budget, {steps} steps, "
          f"lr peak {peak:.3g} -> last {last:.3g}")

    started = time.monotonic()
    first = launch(args.python, args.recipe, args.dataset, args.budget, work / "killed", work / "killed.log")
    time.sleep(args.budget / 2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic() - started
    checkpoints = sorted((work / "killed").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    print(f"killed: SIGKILL at {killed_at:.1f} s, newest checkpoint {checkpoints[-1].name if checkpoints else None}")

    started = time.monotonic()
    code = launch(args.python, args.recipe, args.dataset, args.budget, work / "killed", work / "rerun.log").wait()
    rerun = time.monotonic() - started
    steps, peak, last = history(work / "killed")
    print(f"rerun: exit {code}, {rerun:.1f} s wall; killed + rerun = {killed_at + rerun:.1f} s for a "
          f"{args.budget} s budget (the work lost since the last checkpoint is not counted twice); "
          f"{steps} steps, lr peak {peak:.3g} -> last {last:.3g}")
    print(f"logs and outputs: {work}")


if __name__ == "__main__":
    main()
