"""Per-step host overhead of vit_hf's training loop against a bare PyTorch loop and the plain HF Trainer.

    python benchmarks/step_overhead.py [--steps 400] [--warmup 30] [--repeats 3] [--block 20] [--threads 1]
        [--quick] [--only a,b,c] [--breakdown] [--profile VARIANT]

A model so small that its step costs ~3 ms on one core (ViT: 1 layer, hidden 64, 2 heads, patch 4 at 16 px,
batch 32, one intra-op thread), so what the loop adds around the model shows. The same model (built by
vit_hf.modeling.build) and the same uint8 data, already in RAM, in every variant:

    a        bare PyTorch: gather + float, forward, backward, clip_grad_norm_, the optimizer the Trainer
             builds by default (AdamW fused=True: `adamw_torch_fused`), LambdaLR step, zero_grad
    a+aug    a, plus vit_hf's augmentation (pad crop + flip + normalize, seeded per step): the compute of
             the augmentation itself, which is work rather than overhead
    b        plain `transformers.Trainer` with its defaults: a torch Dataset whose `__getitems__` returns whole
             float batches, logging_steps huge, no evaluation, no save, report_to none, 0 workers, no tqdm
    c ...    vit_hf's whole loop, built by the same training.build.build_run as training.train.train() (the
             trainer and every callback: step clock, budget, checkpoints, monitor, EMA, non-finite guard), on a
             UInt8Images memory store with pad crop + flip on the device; rows with EMA on/off and budget
             on/off. `c noaug` is the default row with the augmentation ops off (normalization only):
             vit_hf's loop without their compute

Each step is timed by a TrainerCallback taking time.perf_counter() at on_step_end (the bare loop takes it
at the same point, after zero_grad): a step is the interval between two marks, data fetch included.
The machine is shared and noisy, and its speed drifts over seconds, so the variants run interleaved
finely: each in a thread of its own, one thread running at a time, handing over to the next every
`--block` steps (the first step after a hand-over is not timed: cold caches). So in each cycle every
variant runs `block` steps on the machine as it is then. Each variant takes `warmup` untimed steps,
then `steps` timed ones; `--repeats` times, on fresh models and trainers. torch runs one intra-op thread
(`--threads`): the host overhead measured here is single-threaded Python anyway, and with two OpenMP
threads torch ran 2-3x slower in a second Python thread than in the main one (torch 2.13, 2 cores).
`--threads 2` (or `--block 0`) runs each variant whole, one after the other in the main thread, the
order alternating between repeats: a cycle is then a repeat.

ms/step is the median over the blocks of each block's median step; (mean) the mean of all steps, rare
slow ones included; "vs (a)" and "vs (b)": the median over the cycles of the difference between the
block medians of the variant and of (a) or (b) in the same cycle. Last line: `overhead_vs_trainer_ms: X`,
the default vit_hf loop (EMA off, budget on, as the recipes run) minus the plain Trainer, in ms/step
(goal: <= 0.3).

`--breakdown` then times the parts of a step in (b) and in the default (c) (perf_counter around each
Trainer method, callback and optimizer call) and prints us/step side by side; `--profile VARIANT` runs
one variant under cProfile (timed steps only) and prints the functions with the most own time. Both run
the variants one after the other, not interleaved.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import logging
import os
import platform
import pstats
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import transformers  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments, get_linear_schedule_with_warmup  # noqa: E402

# vit_hf, through its module paths: update this block when modules move.
from vit_hf.data.loaders import UInt8Images  # noqa: E402
from vit_hf.data.pipeline import Prepared, plan_loader  # noqa: E402
from vit_hf.modeling.build import build_model  # noqa: E402
from vit_hf.modeling.preprocessing import Preprocessing  # noqa: E402
from vit_hf.recipe.load import recipe_from_dict  # noqa: E402
from vit_hf.recipe.training_args import training_arguments  # noqa: E402
from vit_hf.training.build import build_run, make_budget, run_options, with_loader_settings  # noqa: E402
from vit_hf.training.metrics import load_metrics  # noqa: E402
from vit_hf.training.stopping import train_guarded  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
NUM_LABELS = 10
LEARNING_RATE = 1e-3
EMA_DECAY = 0.9998
# Far beyond the run: the budget's callbacks and schedule work but never stop it, and its automatic
# save_every (a tenth, at most 30 min) never comes due.
BUDGET_SECONDS = 24 * 3600.0
EVAL_IMAGES = 512  # only for the budget's reserve probe before training (no evaluation during it)
NEVER = 10**9  # logging_steps: no log entry inside the timed steps

BARE, TRAINER, DEFAULT = "a bare PyTorch loop", "b plain HF Trainer", "c vit_hf (EMA off, budget on)"
# name -> (kind, options)
VARIANTS: dict[str, tuple[str, dict]] = {
    BARE: ("bare", {"augment": False}),
    "a+aug bare loop + vit_hf augment": ("bare", {"augment": True}),
    TRAINER: ("trainer", {}),
    DEFAULT: ("vit_hf", {"ema": False, "budget": True, "augment": True}),
    "c vit_hf (EMA on, budget on)": ("vit_hf", {"ema": True, "budget": True, "augment": True}),
    "c vit_hf (EMA off, budget off)": ("vit_hf", {"ema": False, "budget": False, "augment": True}),
    "c vit_hf (EMA on, budget off)": ("vit_hf", {"ema": True, "budget": False, "augment": True}),
    "c noaug vit_hf (EMA off, budget on)": ("vit_hf", {"ema": False, "budget": True, "augment": False}),
}


# Interleaving and step timing ---------------------------------------------------------------------------


class Baton:
    """One variant's thread runs at a time; `pass_turn` hands over to the next unfinished one and waits."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.turns = {name: threading.Event() for name in self.names}
        self.finished: set[str] = set()
        self.all_done = threading.Event()

    def wait(self, name: str) -> None:
        self.turns[name].wait()
        self.turns[name].clear()

    def hand_over(self, name: str, finished: bool = False) -> None:
        if finished:
            self.finished.add(name)
        i = self.names.index(name)
        for k in range(1, len(self.names) + 1):
            following = self.names[(i + k) % len(self.names)]
            if following not in self.finished:
                self.turns[following].set()
                return
        self.all_done.set()

    def pass_turn(self, name: str) -> None:
        self.hand_over(name)
        self.wait(name)


class StepMarks(TrainerCallback):
    """perf_counter() at each step's end: after `warmup` steps, `steps` intervals, in blocks of `block`
    when a Baton interleaves the variants (the step after each hand-over is not timed)."""

    def __init__(self, opts, name: str = "", baton: Baton | None = None, profiler: cProfile.Profile | None = None):
        self.warmup, self.steps, self.block = opts.warmup, opts.steps, opts.block if baton else 0
        self.name, self.baton, self.profiler = name, baton, profiler
        self.blocks: list[list[float]] = [[]]
        self.timed = 0
        self.timing = False  # inside the timed steps (Breakdown counts only then)
        self._seen = 0
        self._last: float | None = None

    def mark(self) -> bool:
        """At a step's end; True once the timed steps are done."""
        now = time.perf_counter()
        self._seen += 1
        if self._seen < self.warmup:
            return False
        if self._last is not None:
            self.blocks[-1].append(now - self._last)
            self.timed += 1
        self._last = now
        if not self.timing:
            self.timing = True
            if self.profiler is not None:
                self.profiler.enable()
        if self.timed >= self.steps:
            self.timing = False
            if self.profiler is not None:
                self.profiler.disable()
            return True
        if self.block and len(self.blocks[-1]) >= self.block:
            self.blocks.append([])
            self.baton.pass_turn(self.name)
            self._last = None
        return False

    def on_step_end(self, args, state, control, **kwargs):
        if self.mark():
            control.should_training_stop = True


def max_steps(opts) -> int:
    """Enough steps for the warm-up, the timed steps and the untimed step after each hand-over."""
    return opts.warmup + opts.steps + opts.steps // max(1, opts.block) + 2


# Data ---------------------------------------------------------------------------------------------


class FloatBatches(torch.utils.data.Dataset):
    """Plain-Trainer data: whole batches from a uint8 array in RAM, as float (0-1), in one gather."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray):
        self.pixels, self.labels = pixels, torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices):
        rows = np.asarray(indices, dtype=np.int64)
        return {"pixel_values": torch.from_numpy(self.pixels[rows]).float().div_(255), "labels": self.labels[rows]}


def pass_batch(batch):
    """The collator for datasets that return whole batches."""
    return batch


def make_data(opts, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 3, opts.size, opts.size), dtype=np.uint8)
    return pixels, rng.integers(0, NUM_LABELS, n).astype(np.int64)


# Recipe and model ------------------------------------------------------------------------------------


def recipe_for(opts, output_dir: str, ema: bool = False, budget: bool = False, augment: bool = True):
    raw = {
        "data": {"dataset": "in-memory", "image_size": opts.size, "mean": MEAN, "std": STD,
                 "crop": "pad" if augment else "none", "pad": 4, "hflip": 0.5 if augment else 0.0},
        "model": {"preset": "vit-tiny", "hidden_size": opts.hidden, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "intermediate_size": 4 * opts.hidden, "patch_size": 4},
        "training": {"output_dir": output_dir, "max_steps": max_steps(opts), "learning_rate": LEARNING_RATE,
                     "per_device_train_batch_size": opts.batch, "logging_steps": NEVER, "eval_strategy": "no",
                     "save_strategy": "no", "report_to": "none", "dataloader_num_workers": 0,
                     "disable_tqdm": True, "seed": 0},
        "budget": {"time": BUDGET_SECONDS if budget else None},
        "extras": {"ema_decay": EMA_DECAY if ema else None},
        "resume": "never",
    }
    return recipe_from_dict(raw)


def new_model(recipe):
    transformers.set_seed(0)
    model = build_model(recipe.model, recipe.vit_config, [str(i) for i in range(NUM_LABELS)], recipe.data.image_size)
    return model.train()


def make_adamw(groups) -> torch.optim.Optimizer:
    """AdamW as the Trainer's default optim builds it (fused), else for-each (the header says which)."""
    try:
        return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8, foreach=True)


def describe_optimizer(optimizer) -> str:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    defaults = inner.defaults
    kind = "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") is not False else "for-loop"
    return f"{type(inner).__name__} ({kind}), {len(inner.param_groups)} param groups"


# The variants -------------------------------------------------------------------------------------------


def run_bare(opts, data, augment: bool, marks: StepMarks) -> None:
    recipe = recipe_for(opts, tempfile.mkdtemp(dir=opts.output_root), augment=augment)
    model = new_model(recipe)
    pixels, labels_np = data
    labels = torch.from_numpy(labels_np)
    no_decay = {n for n, p in model.named_parameters() if p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias")}
    groups = [{"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": 0.0},
              {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0}]
    optimizer = make_adamw(groups)  # two groups, as the Trainer's (decay / no decay)
    total = max_steps(opts)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)  # the Trainer's default: a LambdaLR
    transform = run_options(recipe, Preprocessing(opts.size, 1.0, MEAN, STD), model, NUM_LABELS, 0.0).train_augment
    generator = torch.Generator()
    order = np.random.default_rng(0).permutation(len(labels_np))
    for step in range(total):
        rows = order[step * opts.batch:(step + 1) * opts.batch]
        batch = torch.from_numpy(pixels[rows])
        x = transform(batch, generator.manual_seed(step)) if augment else batch.float().div_(255)
        loss = model(pixel_values=x, labels=labels[rows]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if marks.mark():
            break


def run_trainer(opts, data, marks: StepMarks, info: dict, breakdown: Breakdown | None = None) -> None:
    output_dir = tempfile.mkdtemp(dir=opts.output_root)
    recipe = recipe_for(opts, output_dir)
    args = TrainingArguments(output_dir=output_dir, max_steps=max_steps(opts), learning_rate=LEARNING_RATE,
                             per_device_train_batch_size=opts.batch, logging_steps=NEVER, eval_strategy="no",
                             save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True,
                             remove_unused_columns=False, seed=0, use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=new_model(recipe), args=args, train_dataset=FloatBatches(*data), data_collator=pass_batch,
                      callbacks=[marks])
    if breakdown is not None:
        breakdown.attach(trainer, marks)
    trainer.train()
    info["trainer optimizer"] = describe_optimizer(trainer.optimizer)


def run_vit_hf(opts, data, eval_data, ema: bool, budget: bool, augment: bool, marks: StepMarks,
               breakdown: Breakdown | None = None) -> None:
    """vit_hf.training.train.train() from its TrainingArguments to train_guarded, through the same build_run,
    on in-memory data instead of a dataset."""
    recipe = recipe_for(opts, tempfile.mkdtemp(dir=opts.output_root), ema=ema, budget=budget, augment=augment)
    clock = time.monotonic
    started_at = clock()
    args = training_arguments(recipe)
    prep = Preprocessing(opts.size, recipe.data.crop_pct, MEAN, STD)
    model = new_model(recipe)
    train_set = UInt8Images(torch.from_numpy(data[0]), torch.from_numpy(data[1]))
    eval_set = UInt8Images(torch.from_numpy(eval_data[0]), torch.from_numpy(eval_data[1]))
    splits = argparse.Namespace(train=train_set, eval=eval_set, label_names=[str(i) for i in range(NUM_LABELS)],
                                eval_images=len(eval_set))  # what vit_hf.data.splits.Splits holds
    loader = plan_loader(recipe.data, splits, prep.image_size, args, recipe.training)
    args = with_loader_settings(args, loader.settings, recipe.training)
    if loader.kind == "memory" and args.device.type == "cuda":  # as data.loaders.make_store
        train_set.pin = eval_set.pin = True
    run = build_run(recipe, args, model, splits, Prepared(train_set, eval_set, loader), prep,
                    load_metrics(recipe.evaluation.metrics), make_budget(recipe, started_at, clock, None), started_at,
                    clock)
    run.trainer.add_callback(marks)
    if breakdown is not None:
        breakdown.attach(run.trainer, marks)
    # Signal handlers can only be set from the main thread; `requested` costs the same either way.
    with run.signals if threading.current_thread() is threading.main_thread() else contextlib.nullcontext():
        train_guarded(run, None)


def run_variant(name: str, opts, data, eval_data, marks: StepMarks, info: dict, breakdown=None) -> None:
    kind, options = VARIANTS[name]
    if kind == "bare":
        run_bare(opts, data, options["augment"], marks)
    elif kind == "trainer":
        run_trainer(opts, data, marks, info, breakdown)
    else:
        run_vit_hf(opts, data, eval_data, options["ema"], options["budget"], options["augment"], marks, breakdown)


def interleaved(names: list[str], opts, data, eval_data, info: dict) -> dict[str, StepMarks]:
    """Every variant in its own thread, one running at a time, in turns of `block` steps."""
    baton = Baton(names)
    marks = {name: StepMarks(opts, name, baton) for name in names}
    errors: dict[str, BaseException] = {}

    def body(name: str) -> None:
        try:
            torch.set_num_threads(opts.threads)
            baton.wait(name)
            run_variant(name, opts, data, eval_data, marks[name], info)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors[name] = exc
        finally:
            baton.hand_over(name, finished=True)

    threads = [threading.Thread(target=body, args=(name,), name=name, daemon=True) for name in names]
    for thread in threads:
        thread.start()
    baton.turns[names[0]].set()
    baton.all_done.wait()
    for thread in threads:
        thread.join()
    for name, exc in errors.items():
        raise RuntimeError(f"variant {name!r} failed") from exc
    return marks


# Where the time of a step goes ------------------------------------------------------------------------------

# Trainer methods called once per step from the loop itself (top level) or from inside another (nested).
TOP_METHODS = ("get_batch_samples", "training_step", "floating_point_ops", "_clip_grad_norm", "_get_grad_norm")
NESTED_METHODS = ("training_inputs", "compute_loss")
STEP_EVENTS = ("on_step_begin", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end")


class Breakdown:
    """Wall time inside chosen calls during the timed steps: perf_counter around each (~0.3 us per call)."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.marks: StepMarks | None = None

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            return

        def timed(*args, **kwargs):
            if not self.marks.timing:
                return original(*args, **kwargs)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start

        setattr(owner, attr, timed)

    def attach(self, trainer, marks: StepMarks) -> None:
        self.marks = marks
        for method in TOP_METHODS + NESTED_METHODS:
            self.wrap(trainer, method, method)
        for event in STEP_EVENTS:
            self.wrap(trainer.callback_handler, event, f"callbacks {event}")
        for callback in trainer.callback_handler.callbacks:
            for event in STEP_EVENTS:
                if getattr(type(callback), event) is not getattr(TrainerCallback, event):  # not the no-op
                    self.wrap(callback, event, f"  {type(callback).__name__}.{event}")
        self.wrap(trainer.model, "zero_grad", "model.zero_grad")
        trainer.add_callback(_WrapOptimizer(self))  # the optimizer and scheduler exist once training begins


class _WrapOptimizer(TrainerCallback):
    def __init__(self, breakdown: Breakdown):
        self.breakdown = breakdown

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        self.breakdown.wrap(optimizer, "step", "optimizer.step (accelerate)")
        self.breakdown.wrap(getattr(optimizer, "optimizer", optimizer), "step", "  torch AdamW.step")
        self.breakdown.wrap(lr_scheduler, "step", "lr_scheduler.step")


def run_breakdown(opts, data, eval_data, names: list[str]) -> list[str]:
    top = [*TOP_METHODS, *(f"callbacks {e}" for e in STEP_EVENTS), "model.zero_grad", "optimizer.step (accelerate)",
           "lr_scheduler.step"]
    per_step: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(opts.repeats):
        for name in names:
            breakdown, marks = Breakdown(), StepMarks(opts, name)
            run_variant(name, opts, data, eval_data, marks, {}, breakdown=breakdown)
            parts = {label: seconds / marks.timed for label, seconds in breakdown.seconds.items()}
            parts["step (all)"] = sum(marks.blocks[0]) / marks.timed
            parts["rest of the loop (_run_epoch body)"] = parts["step (all)"] - sum(parts.get(k, 0.0) for k in top)
            per_step[name].append(parts)
    labels = list(dict.fromkeys(label for runs in per_step.values() for parts in runs for label in parts))
    order = ["step (all)", "rest of the loop (_run_epoch body)", *TOP_METHODS, *NESTED_METHODS,
             "optimizer.step (accelerate)", "  torch AdamW.step", "lr_scheduler.step", "model.zero_grad"]
    labels = [label for label in order if label in labels] + sorted(label for label in labels if label not in order)
    medians = {name: {label: statistics.median(p.get(label, 0.0) for p in runs) * 1e6 for label in labels}
               for name, runs in per_step.items()}
    width = max(len(label) for label in labels)
    lines = [f"\nwhere a step's time goes, us/step (mean over {opts.steps} steps, median of {opts.repeats} runs, "
             "one after the other; the timers add ~0.3 us per call):",
             f"{'':<{width}}" + "".join(f"  {name[:24]:>24}" for name in names) + "  last - first"]
    for label in labels:
        values = [medians[name][label] for name in names]
        cells = "".join(f"  {v:24.1f}" for v in values)
        lines.append(f"{label:<{width}}{cells}  {values[-1] - values[0]:+12.1f}")
    return lines


def run_profile(name: str, opts, data, eval_data, top: int) -> list[str]:
    profiler = cProfile.Profile()
    run_variant(name, opts, data, eval_data, StepMarks(opts, name, profiler=profiler), {})
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # by own time
    lines = [f"\ncProfile of {name!r}, {opts.steps} steps (cProfile inflates Python-heavy code): "
             "own us/step, cumulative us/step, calls/step"]
    for (path, line, func), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(path).name}:{line}:{func}" if line else func
        lines.append(f"  {own / opts.steps * 1e6:8.1f} {cumulative / opts.steps * 1e6:9.1f} {calls / opts.steps:6.1f}  "
                     f"{where}")
    return lines


# Report -------------------------------------------------------------------------------------------------


def others_cpu_seconds() -> float | None:
    """CPU seconds that other processes have used so far: the whole machine's busy time (Linux /proc/stat)
    less this process's own; None where /proc/stat is missing."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    own = os.times()
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # user..steal, less idle and iowait (guest is inside user)
    return busy / os.sysconf("SC_CLK_TCK") - own.user - own.system


def summarize(blocks: dict[str, list[list[float]]]) -> dict[str, dict[str, float | None]]:
    """Per variant: the median of its block medians, the mean of its steps, the p10/p90 of its block medians,
    and the median of the same-cycle differences from (a) and (b); in ms/step."""
    medians = {name: [statistics.median(b) * 1e3 for b in bs if b] for name, bs in blocks.items()}
    results = {}
    for name, m in medians.items():
        steps = [s for b in blocks[name] for s in b]
        low, high = np.percentile(m, [10, 90])
        row = {"median": statistics.median(m), "mean": statistics.mean(steps) * 1e3, "low": low, "high": high}
        for key, base in (("vs_a", BARE), ("vs_b", TRAINER)):
            row[key] = statistics.median(x - y for x, y in zip(m, medians[base])) if base in medians else None
        results[name] = row
    return results


def print_table(results: dict[str, dict[str, float | None]]) -> None:
    width = max(len(name) for name in results)
    print(f"{'variant':<{width}}  ms/step   (mean)  block medians p10..p90   vs (a)   vs (b)")
    for name, r in results.items():
        vs = "".join(f"  {r[k]:+7.3f}" if r[k] is not None else "        -" for k in ("vs_a", "vs_b"))
        print(f"{name:<{width}}  {r['median']:7.3f}  {r['mean']:7.3f}  {r['low']:7.3f} .. {r['high']:7.3f}   {vs}")


def select(prefixes: str | None) -> list[str]:
    if not prefixes:
        return list(VARIANTS)
    wanted = [p.strip() for p in prefixes.split(",") if p.strip()]
    # A variant's full name, its first word ('c'), or the start of its name ('c vit_hf (EMA off').
    return [n for n in VARIANTS if any(n == p or n.startswith(p + " ") or (" " in p and n.startswith(p))
                                       for p in wanted)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="timed steps per run, after the warm-up")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every variant, one after another")
    parser.add_argument("--block", type=int, default=20, help="steps each variant runs before handing over; "
                        "0: whole runs one after the other")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads; > 1 implies --block 0")
    parser.add_argument("--batch", type=int, default=32, help="32: a bare step of ~3 ms on one core")
    parser.add_argument("--hidden", type=int, default=64, help="ViT width (1 layer, 2 heads, patch 4)")
    parser.add_argument("--size", type=int, default=16, help="image size in pixels")
    parser.add_argument("--quick", action="store_true", help="a tiny run (~10 s here): 100 steps, 1 repeat")
    parser.add_argument("--only", default=None, help="comma-separated variants or their first word: 'a,b,c'")
    parser.add_argument("--breakdown", action="store_true", help="then time the parts of a step in b and c")
    parser.add_argument("--profile", default=None, metavar="VARIANT", help="then cProfile this variant (prefix)")
    parser.add_argument("--top", type=int, default=30, help="--profile: rows to print")
    opts = parser.parse_args()
    if opts.quick:
        opts.steps, opts.warmup, opts.repeats = min(opts.steps, 100), min(opts.warmup, 10), 1
    if opts.threads > 1:
        opts.block = 0
    torch.set_num_threads(opts.threads)

    transformers.logging.set_verbosity_error()
    logging.getLogger("vit_hf").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory(prefix="step_overhead_") as output_root:  # the Trainers' output_dirs (empty)
        opts.output_root = output_root
        measure(opts)


def measure(opts) -> None:
    names = select(opts.only)
    data = make_data(opts, (max_steps(opts) + 2) * opts.batch, seed=0)  # one epoch: no epoch end inside a run
    eval_data = make_data(opts, EVAL_IMAGES, seed=1)
    info: dict[str, str] = {}
    blocks: dict[str, list[list[float]]] = {name: [] for name in names}
    started, others_before = time.perf_counter(), others_cpu_seconds()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's PrinterCallback prints its final metrics
        for repeat in range(opts.repeats):
            if opts.block:
                runs = interleaved(names, opts, data, eval_data, info)
            else:
                runs = {name: StepMarks(opts, name) for name in (names if repeat % 2 == 0 else names[::-1])}
                for name, marks in runs.items():
                    run_variant(name, opts, data, eval_data, marks, info)
            for name, marks in runs.items():
                blocks[name].extend(marks.blocks)
    seconds, others_after = time.perf_counter() - started, others_cpu_seconds()
    results = summarize(blocks)

    others = "" if others_before is None else (
        f", other processes took {(others_after - others_before) / (seconds * (os.cpu_count() or 1)):.0%} of the CPUs")
    bare_optimizer = describe_optimizer(make_adamw([{"params": [torch.nn.Parameter(torch.zeros(2))]}]))
    print(f"step overhead: ViT 1 x {opts.hidden} (2 heads, patch 4) at {opts.size} px, batch {opts.batch}, fp32, "
          f"{platform.machine()} x{os.cpu_count()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}")
    how = f"interleaved in blocks of {opts.block} steps" if opts.block else "one after the other"
    print(f"{opts.steps} timed steps after {opts.warmup} warm-up per run, {opts.repeats} runs of each, {how}; "
          f"{seconds:.0f} s{others}")
    print(f"optimizer: Trainer {info.get('trainer optimizer', '-')}, bare loop {bare_optimizer.split(',')[0]}")
    print_table(results)
    lines = []
    with contextlib.redirect_stdout(io.StringIO()):
        if opts.breakdown:
            lines += run_breakdown(opts, data, eval_data, [TRAINER, DEFAULT])
        profiled = select(opts.profile) if opts.profile else []
        if profiled:
            lines += run_profile(profiled[0], opts, data, eval_data, opts.top)
    if lines:
        print("\n".join(lines))
    if DEFAULT in results and TRAINER in results:
        print(f"overhead_vs_trainer_ms: {results[DEFAULT]['vs_b']:.3f}")


if __name__ == "__main__":
    main()
