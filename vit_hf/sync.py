"""Agreement across DDP ranks: rank 0's clock decides, every rank acts the same.

Time-based decisions (stop now, save now, skip this evaluation) and the schedule's progress come
from the clock of each process; ranks whose clocks disagree by a millisecond would stop on
different steps and hang in the next collective. One all-reduce per step settles it.
"""

from __future__ import annotations

import math

import torch


def device_of(args) -> torch.device | str:
    """The device collectives run on (CUDA for NCCL); the CPU when there are no TrainingArguments."""
    return args.device if args is not None else "cpu"


def agree(rank0_values: list[float], any_flags: list[bool], device) -> tuple[list[float], list[bool]]:
    """Rank 0's values and the OR of every rank's flags, on every rank (identity without DDP)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rank0_values, any_flags
    values = torch.tensor(rank0_values + [float(f) for f in any_flags], dtype=torch.float64, device=device)
    if dist.get_rank() != 0:
        values[: len(rank0_values)] = -math.inf  # decisions are >= 0: MAX keeps rank 0's
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    out = values.tolist()
    return out[: len(rank0_values)], [v > 0 for v in out[len(rank0_values) :]]
