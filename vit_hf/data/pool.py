"""Decoding processes that end with the process that started them, and a parent that sees one of them die.

The gaps filled: a pool's workers are ordinary child processes. When their parent is killed with SIGKILL
(an OOM kill, `kill -9`, a preempted job whose cleanup never ran), nothing tells them: they decode on
as orphans until their task is done, holding CPU, memory and half-written temp files. The multiprocessing
pool that datasets.map(num_proc=...) starts behaves the same way (tried: CIFAR-10 at 96 px, killed 1.5 s
into the build, its workers lived on). Here each worker asks the kernel to kill it when its parent dies
(Linux: prctl PR_SET_PDEATHSIG), or, elsewhere, watches its parent id from a thread. The other way round,
a worker killed under multiprocessing.Pool (by the OOM killer, say) leaves its task waited for forever;
concurrent.futures' ProcessPoolExecutor notices the death and raises BrokenProcessPool.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import datasets
import torch

# linux/prctl.h
_PR_SET_PDEATHSIG = 1
# Elsewhere: how often a worker checks that its parent is still there.
_PARENT_POLL_SECONDS = 0.5


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a cgroup cpuset, SLURM), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def decoding_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A ProcessPoolExecutor of `workers` decoding processes that die with this one; leaving the block on an
    error stops them at once (not after their tasks). Fork where the platform has it: nothing to re-import,
    start-up in milliseconds; the workers are forked at the first submit, all of them."""
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    # shutdown() alone waits for the tasks in progress: a shard each, seconds of decoding nobody will read.
    if hasattr(pool, "terminate_workers"):  # Python 3.14
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # before 3.14: no public way
        process.terminate()


def _start_worker(parent_pid: int) -> None:
    # One thread each: `workers` processes share the cores, and torch's thread pool inherited through fork
    # must not be entered again (OpenMP after fork can hang; torch's DataLoader workers do the same).
    torch.set_num_threads(1)
    datasets.disable_progress_bars()  # the parent draws one bar for the whole build
    _end_with_parent(parent_pid)


def _end_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent was gone before the kernel was told to watch it
        os._exit(1)


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)
