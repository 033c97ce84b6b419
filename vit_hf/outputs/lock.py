"""One run per output_dir: a second run, or an --eval-only run, writing there stops at once, naming the first.

    with output_dir_lock(args.output_dir):
        train(recipe)

`fcntl.flock` on `output_dir/_vit_hf.lock`. The kernel releases the lock when its process ends,
however it ends (kill -9 included), so no stale lock is ever left to clean up. The file holds the
owner's pid, host and start time, for the message; its `_` prefix keeps it out of the Trainer's
Hub pushes. In DDP only the first rank locks: the other ranks of the same run write there too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import RecipeError

LOCK_NAME = "_vit_hf.lock"


class OutputDirBusy(RecipeError):
    """Another live process holds the output_dir lock."""


@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the output_dir lock for the block; OutputDirBusy at once if another process holds it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    fd = os.open(Path(output_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirBusy(
                f"training.output_dir: {str(output_dir)!r} is in use by another vit_hf run ({_read_owner(fd)}); "
                "wait for it to end, or choose another training.output_dir"
            ) from None
        _write_owner(fd)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_owner(fd: int) -> None:
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)


def _read_owner(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "owner unknown"
