"""See what a run is doing: throughput, data wait, accelerator use and the budget, in the Trainer's logs.

Details: docs/DESIGN.md, "Where the time goes in a training step".
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import ProgressCallback, TrainerCallback

from ..recipe.durations import format_duration
from .budget import TimeBudget
from .steps import StepClock

logger = logging.getLogger(__name__)

# NVML utilization is itself an average over the last 1/6 s to 1 s; sampling more often adds nothing.
UTILIZATION_SAMPLE_SECONDS = 1.0


def images_per_step(args) -> int:
    """Images in one optimizer step, over all devices and accumulated micro-batches."""
    return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps


@dataclass
class RunTiming:
    """Where this process's wall time went, for the end-of-run summary."""

    setup: float = 0.0  # process start -> training starts: data loading, model building, restores
    training: float = 0.0  # training, less the evaluations and saves made during it
    evaluation: float = 0.0
    saving: float = 0.0
    steps: int = 0  # optimizer steps taken by this process, its first one left out
    step_seconds: float = 0.0  # time inside those steps, data wait included
    images_per_step: int = 0
    first_step: float = 0.0  # from training's start to the first step's end: loader start, warm-up, compile

    @property
    def images_per_second(self) -> float:
        return self.steps * self.images_per_step / self.step_seconds if self.step_seconds > 0 else 0.0


@dataclass
class StepWindow:
    """The steps since the last training log entry."""

    steps: int = 0
    busy: float = 0.0  # on_step_begin -> on_step_end
    wait: float = 0.0  # on_step_end -> next on_step_begin

    @property
    def seconds(self) -> float:
        return self.busy + self.wait


@dataclass
class InputBoundWatch:
    """Fires once per episode of sustained data wait: `windows` logging windows in a row above `threshold`."""

    threshold: float = 0.10
    windows: int = 3
    _streak: int = 0

    def observe(self, wait_fraction: float) -> bool:
        if wait_fraction <= self.threshold:
            self._streak = 0
            return False
        self._streak += 1
        return self._streak == self.windows


def input_bound_advice(wait_fraction: float, windows: int, loader: str | None, workers: int, persistent: bool) -> str:
    """What to change when the step waits for data; only options that work with the store in use.

    A device or memory store serves a batch by one gather: workers cannot help it (the store runs without
    them), a smaller store can. Workers page in (mmap) or decode (decode, streams): more of them, kept
    alive across epochs, or a store that decodes once instead."""
    head = (f"input-bound: data wait {wait_fraction:.0%} of step time over the last {windows} logging windows, "
            "the accelerator idles while batches are fetched; ")
    if loader in ("device", "memory"):
        where = "on the device" if loader == "device" else "in RAM"
        return head + (f"the batches are gathers {where} (data.loader {loader}): a smaller data.image_size, "
                       "or a larger per_device_train_batch_size, shortens the fetch relative to the step")
    tips = [f"more training.dataloader_num_workers (now {workers})"]
    if workers > 0 and not persistent:
        tips.append("training.dataloader_persistent_workers: true")
    if loader in (None, "decode", "mmap"):
        tips.append("data.loader: memory or device (decoded once, a batch is then a gather) when the data fits")
    return head + "try " + ", ".join(tips)


class AcceleratorStats:
    """Utilization and memory of the CUDA device this process trains on.

    Utilization and used memory (what nvidia-smi shows) come from NVML through torch.cuda, which maps
    CUDA_VISIBLE_DEVICES to NVML indices; they need the optional nvidia-ml-py and are skipped without
    it. The allocator's peak (torch.cuda.max_memory_allocated) is always there.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.nvml = importlib.util.find_spec("pynvml") is not None
        self._utilization: list[float] = []
        self._last_sample: float | None = None

    @classmethod
    def for_device(cls, device: torch.device) -> AcceleratorStats | None:
        return cls(device) if device.type == "cuda" and torch.cuda.is_available() else None

    def sample(self, now: float) -> None:
        """Called at each step's end; samples utilization at most once per UTILIZATION_SAMPLE_SECONDS."""
        if not self.nvml or (self._last_sample is not None and now - self._last_sample < UTILIZATION_SAMPLE_SECONDS):
            return
        self._last_sample = now
        utilization = self._nvml(torch.cuda.utilization)
        if utilization is not None:
            self._utilization.append(utilization)

    def window_metrics(self) -> dict[str, float]:
        metrics = {"gpu_max_memory_allocated_gb": torch.cuda.max_memory_allocated(self.device) / 1e9}
        if self._utilization:
            metrics["gpu_utilization"] = sum(self._utilization) / len(self._utilization)
            self._utilization.clear()
        used = self._nvml(torch.cuda.device_memory_used)
        if used is not None:
            metrics["gpu_memory_used_gb"] = used / 1e9
        return metrics

    def _nvml(self, query) -> float | None:
        """query(device), or None from the first time NVML fails on (no driver access, a MIG slice, an old driver)."""
        if not self.nvml:
            return None
        try:
            return float(query(self.device))
        except Exception as exc:  # noqa: BLE001 - pynvml raises its own NVMLError tree besides RuntimeError
            logger.info("NVML unavailable (%s): GPU utilization and used memory are not logged", exc)
            self.nvml = False
            return None


class RunMonitor(TrainerCallback):
    """Times steps and phases; `log_metrics` gives the keys VitTrainer.log adds to each log entry.

    Every entry gets `images_seen` and `elapsed_seconds` (the x axes of curves.png); training entries
    also get the last window's `images_per_second` and `data_wait_fraction`, the accelerator's
    utilization and memory, `eta_seconds` (until training ends), and with a budget
    `budget_spent_seconds` and `budget_remaining_seconds`.
    """

    def __init__(
        self,
        budget: TimeBudget | None = None,
        started_at: float | None = None,
        clock=time.monotonic,
        input_bound: InputBoundWatch | None = None,
        loader: str | None = None,
        steps: StepClock | None = None,
    ):
        self.budget = budget
        self.loader = loader  # the data store's kind (data.loaders), for the input-bound advice
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.input_bound = input_bound or InputBoundWatch()
        self.steps = steps or StepClock(clock)
        self._owns_steps = steps is None  # alone, it drives its own clock; in a run, the run's StepClock is shared
        self.timing = RunTiming()
        self.window = StepWindow()
        self.accelerator: AcceleratorStats | None = None
        self.workers = 0
        self.persistent_workers = False
        self._elapsed_before = 0.0  # elapsed_seconds logged by the run this one resumes (no budget)
        self._train_begin: float | None = None
        self._phase_mark: float | None = None  # end of the last step or phase: where an evaluation/save began

    # Trainer events ---------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if self._owns_steps:
            self.steps.on_train_begin(args, state, control)
        now = self.clock()
        self._train_begin = self._phase_mark = now
        self.timing.setup = now - self.started_at
        self.timing.images_per_step = images_per_step(args)
        self.workers = args.dataloader_num_workers
        self.persistent_workers = args.dataloader_persistent_workers
        self.accelerator = AcceleratorStats.for_device(args.device)
        logged = [entry["elapsed_seconds"] for entry in state.log_history if "elapsed_seconds" in entry]
        self._elapsed_before = logged[-1] if logged else 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self._owns_steps:
            self.steps.on_step_begin(args, state, control)

    def on_step_end(self, args, state, control, **kwargs):
        if self._owns_steps:
            self.steps.on_step_end(args, state, control)
        now = self.clock()
        step = self.steps.last
        if step is None:
            self._first_step_done(args)
        else:
            self.window.busy += step.busy
            self.window.wait += step.wait
            self.window.steps += 1
            self.timing.step_seconds += step.busy + step.wait
            self.timing.steps += 1
        self._phase_mark = now
        if self.accelerator is not None:
            self.accelerator.sample(now)

    def _first_step_done(self, args) -> None:
        """The first step carries one-off costs (workers starting, allocation, kernel selection and, with
        torch_compile, compiling): logged on its own and kept out of every rate."""
        self.timing.first_step = self.steps.first_step
        why = "torch.compile compiling, and warm-up" if args.torch_compile else "loader start and warm-up"
        logger.info("first step: %s (%s); images/s and ETAs count from the second", format_duration(
            self.timing.first_step), why)

    def on_evaluate(self, args, state, control, **kwargs):
        self._forward("on_evaluate", args, state, control)
        self._end_phase("evaluation")

    def on_predict(self, args, state, control, **kwargs):
        self._forward("on_predict", args, state, control)
        self._end_phase("evaluation")

    def on_save(self, args, state, control, **kwargs):
        self._forward("on_save", args, state, control)
        self._end_phase("saving")

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._forward("on_log", args, state, control)

    def _forward(self, event: str, args, state, control) -> None:
        if self._owns_steps:
            getattr(self.steps, event)(args, state, control)

    def on_train_end(self, args, state, control, **kwargs):
        now = self.clock()
        # Everything evaluated or saved so far happened inside the training span.
        self.timing.training = now - self._train_begin - self.timing.evaluation - self.timing.saving
        self._phase_mark = now

    @contextlib.contextmanager
    def timed(self, phase: str):
        """Times a phase the Trainer raises no event for: `with monitor.timed("saving"): trainer.save_model()`."""
        self._phase_mark = self.clock()
        yield
        self._end_phase(phase)

    def _end_phase(self, phase: str) -> None:
        now = self.clock()
        if self._phase_mark is not None:
            setattr(self.timing, phase, getattr(self.timing, phase) + now - self._phase_mark)
        self._phase_mark = now

    # Log entries ------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall time of the run, counted across restarts: the budget's clock when there is one."""
        if self.budget is not None:
            return self.budget.spent()
        return self._elapsed_before + self.clock() - self.started_at

    def log_metrics(self, logs: dict[str, float], state) -> dict[str, float]:
        """The keys to add to the log entry `logs` (see the class docstring)."""
        metrics = {"images_seen": state.global_step * self.timing.images_per_step, "elapsed_seconds": self.elapsed()}
        if self.budget is not None:
            metrics["budget_spent_seconds"] = self.budget.spent()
            metrics["budget_remaining_seconds"] = self.budget.remaining()
        if "loss" in logs and self.window.steps:  # a training entry, not an evaluation or the final summary
            metrics |= self._window_metrics(state)
            self.window = StepWindow()
        return metrics

    def _window_metrics(self, state) -> dict[str, float]:
        window = self.window
        wait_fraction = window.wait / window.seconds if window.seconds > 0 else 0.0
        metrics = {
            "images_per_second": window.steps * self.timing.images_per_step / max(window.seconds, 1e-9),
            "data_wait_fraction": wait_fraction,
            "eta_seconds": self._eta(state, window.seconds / window.steps),
        }
        if self.accelerator is not None:
            metrics |= self.accelerator.window_metrics()
        if self.input_bound.observe(wait_fraction) and state.is_local_process_zero:
            logger.warning(input_bound_advice(wait_fraction, self.input_bound.windows, self.loader, self.workers,
                                              self.persistent_workers))
        return metrics

    def _eta(self, state, step_seconds: float) -> float:
        """Seconds until training ends: the steps left at the current pace, or the budget, whichever is first.

        With a budget and no step limit, max_steps is a sentinel, so the budget term is the one that counts.
        """
        estimates = [max(0, state.max_steps - state.global_step) * step_seconds]
        if self.budget is not None:
            estimates.append(max(0.0, self.budget.stop_training_at - self.budget.spent()))
        return min(estimates)


class BudgetProgressBar(ProgressCallback):
    """The Trainer's progress bar, filled by budget time when there is a budget.

    With a time budget and no step limit the Trainer's step total is a sentinel (a billion steps):
    a step bar would sit at 0% to the end. This one counts budget seconds, and its text says the
    step, the epoch, the last logged images/s and the budget left. Without a budget it is the
    Trainer's step bar with the same text.
    """

    BUDGET_FORMAT = "budget {percentage:3.0f}%|{bar}| {desc}"

    def __init__(self, budget: TimeBudget | None = None):
        super().__init__()
        self.budget = budget
        self.images_per_second: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.budget is None:
            return super().on_train_begin(args, state, control, **kwargs)
        if state.is_world_process_zero:
            self.training_bar = tqdm(
                total=self.budget.seconds,
                initial=self.budget.spent(),
                bar_format=self.BUDGET_FORMAT,
                dynamic_ncols=True,
            )
        self.current_step = 0

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.training_bar.set_description_str(self.describe(state), refresh=False)
        if self.budget is None:
            return super().on_step_end(args, state, control, **kwargs)
        self.training_bar.update(min(self.budget.spent(), self.budget.seconds) - self.training_bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.images_per_second = (logs or {}).get("images_per_second", self.images_per_second)
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.set_description_str(self.describe(state), refresh=False)  # redrawn by the write below
        return super().on_log(args, state, control, logs=logs, **kwargs)

    def describe(self, state) -> str:
        parts = [f"step {state.global_step}", f"epoch {state.epoch or 0:.2f}"]
        if self.images_per_second is not None:
            parts.append(f"{self.images_per_second:,.0f} img/s")
        if self.budget is not None:
            parts.append(f"{format_duration(self.budget.spent())} of {format_duration(self.budget.seconds)}")
            parts.append(f"{format_duration(max(0.0, self.budget.remaining()))} left")
        return " | ".join(parts)


def use_budget_progress_bar(trainer, budget: TimeBudget | None) -> None:
    """Swap the Trainer's ProgressCallback for a BudgetProgressBar; a notebook bar or disable_tqdm's printer stays."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BudgetProgressBar(budget))
