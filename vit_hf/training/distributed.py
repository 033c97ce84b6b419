"""Agreement across DDP ranks: rank 0's clock decides, every rank acts the same.

Time-based decisions (stop now, save now, skip this evaluation) and the schedule's progress come
from the clock of each process; ranks whose clocks disagree by a millisecond would stop on
different steps and hang in the next collective. One all-reduce every AGREE_EVERY steps settles it.
"""

from __future__ import annotations

import logging
import math

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


# In DDP the ranks settle their time-based decisions (stop, save, skip an evaluation, the schedule's
# progress) at every AGREE_EVERY-th step, and at the first two: each agreement is a collective that the
# host waits for, which drains the GPU's queue. Between them every rank computes the same values from
# the last agreement. One process agrees with itself at every step, for free.
AGREE_EVERY = 16


def is_agreement_step(step: int, ranks: int | None = None) -> bool:
    """Whether the ranks agree at the end of global step `step` (every step without DDP). `ranks`: the world
    size, when the caller knows it (asking torch.distributed at every step costs a few microseconds)."""
    return (world_size() if ranks is None else ranks) == 1 or step <= 2 or step % AGREE_EVERY == 0


def device_of(args) -> torch.device | str:
    """The device collectives run on (CUDA for NCCL); the CPU when there are no TrainingArguments."""
    return args.device if args is not None else "cpu"


def world_size() -> int:
    """Processes in the DDP group; 1 without one."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def agree(rank0_values: list[float], any_flags: list[bool], device) -> tuple[list[float], list[bool]]:
    """Rank 0's values and the OR of every rank's flags, on every rank (identity without DDP)."""
    dist = torch.distributed
    if world_size() == 1:
        return rank0_values, any_flags
    values = torch.tensor(rank0_values + [float(f) for f in any_flags], dtype=torch.float64, device=device)
    if dist.get_rank() != 0:
        values[: len(rank0_values)] = -math.inf  # decisions are >= 0: MAX keeps rank 0's
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    out = values.tolist()
    return out[: len(rank0_values)], [v > 0 for v in out[len(rank0_values) :]]


class StopStepReport(TrainerCallback):
    """In DDP, every rank's final global_step, gathered at the end of training and logged by rank 0.

    Every stop decision (budget, signal, early stopping) must take effect on the same step on every
    rank; this one line per run shows that it did, or names the ranks that did not.
    """

    def on_train_end(self, args, state, control, **kwargs):
        dist = torch.distributed
        if world_size() == 1:
            return
        step = torch.tensor([state.global_step], dtype=torch.int64, device=device_of(args))
        steps = [torch.zeros_like(step) for _ in range(world_size())]
        dist.all_gather(steps, step)
        if dist.get_rank() != 0:
            return
        by_rank = [int(s.item()) for s in steps]
        if len(set(by_rank)) == 1:
            logger.info("training ended at step %d on all %d ranks", by_rank[0], len(by_rank))
        else:
            logger.error("ranks ended training on different steps: %s", ", ".join(
                f"rank {rank} at step {s}" for rank, s in enumerate(by_rank)))
