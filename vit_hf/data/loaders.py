"""Loaders chosen by the data: batches are gathers from a uint8 store, not per-image Python.

    device   the whole split on the accelerator; a batch is an index gather there (airbench's way)
    memory   the whole split in RAM; a gather, then one copy of the batch to the device
    mmap     the cached Arrow files, memory-mapped; a gather by a few threads, which page in from disk
    decode   no cache: each image decoded in DataLoader workers at every epoch (streams always)

Each store is a torch Dataset with `__getitems__`, so the Trainer's own DataLoader, sampler,
accelerate's DDP sharding and its resume-time batch skipping all work unchanged: torch calls
`__getitems__(indices)` with a whole batch of indices, and `batch_collator` passes the batch on.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import torch
from transformers import default_data_collator

from .gpu_decode import collate_encoded
from .pool import available_cores

logger = logging.getLogger(__name__)

LOADERS = ("auto", "device", "memory", "mmap", "decode")
GATHER_STORES = ("device", "memory", "mmap")  # a batch is one gather from the cache: no DataLoader workers
# Share of free accelerator memory the splits may take on the device: the model, optimizer state
# and activations need the rest.
DEVICE_SHARE = 0.5
# Share of available RAM for the in-memory store (DataLoader workers, the OS page cache need the rest).
MEMORY_SHARE = 0.4
# Threads of the mmap store's gather: each copies its rows and takes its own page faults (numpy copies without
# the GIL), so reads from a disk overlap. 8 keep an NVMe drive busy.
MMAP_GATHER_THREADS = 8


class ArrowPixels:
    """The `pixels` column of a cached Arrow dataset as uint8 [N, 3, S, S] chunks, zero-copy (memory-mapped).

    A gather copies rows straight from the mapped files into the output (pinned memory on CUDA), on a few
    threads, in the training process. Not in DataLoader workers: a worker's batch crosses to the training
    process through shared memory, two more copies of every byte (measured here at 176 px, 2 cores: 1-15k
    img/s with 2 workers, against 100k+ for the threaded gather)."""

    def __init__(self, ds: datasets.Dataset, threads: int | None = None):
        if ds._indices is not None:
            ds = ds.flatten_indices()
        column = ds.data.table.column("pixels")
        shape = ds.features["pixels"].shape
        self.chunks = [_chunk_array(chunk, shape) for chunk in column.chunks]
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        self.threads = threads or min(MMAP_GATHER_THREADS, available_cores())
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}  # threads do not cross processes; a copy starts its own

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.chunks[0].shape[1:]

    def gather(self, indices: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The rows `indices`, written into `out` ([len(indices), *item_shape] uint8), on self.threads threads."""
        parts = np.array_split(np.arange(len(indices)), min(self.threads, len(indices)))
        if len(parts) <= 1:
            self._gather_part(indices, out)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mmap-gather")
        list(self._pool.map(lambda part: self._gather_part(indices[part], out[part[0]:part[-1] + 1]), parts))
        return out

    def _gather_part(self, indices: np.ndarray, out: np.ndarray) -> None:
        if len(self.chunks) == 1:
            _take(self.chunks[0], indices, out)
            return
        which = np.searchsorted(self.starts, indices, side="right") - 1
        for i, (chunk, row) in enumerate(zip(which.tolist(), (indices - self.starts[which]).tolist())):
            np.copyto(out[i], self.chunks[chunk][row])  # one image: a memcpy, GIL released

    def to_tensor(self) -> torch.Tensor:
        """Everything in one contiguous tensor in RAM (a copy)."""
        return torch.from_numpy(np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0].copy())


def _chunk_array(chunk, shape) -> np.ndarray:
    # Array3D is an extension type over nested lists: flattening them reaches the uint8 buffer,
    # which numpy then views without a copy (the Arrow file is memory-mapped).
    values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
    lists = (pa.types.is_list, pa.types.is_fixed_size_list, pa.types.is_large_list)
    while any(is_list(values.type) for is_list in lists):
        values = values.flatten()
    return values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape)


@dataclass
class _NumpyRows:
    array: np.ndarray

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.array.shape[1:]

    def gather(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        return _take(self.array, rows, out)


def _take(array: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    # mode="clip": with the default "raise", numpy buffers `out` (2.5x slower at 32 px); the rows come
    # from the sampler and are always in range.
    return np.take(array, rows, axis=0, out=out, mode="clip")


class UInt8Images(torch.utils.data.Dataset):
    """Items and whole batches {"pixel_values": uint8, "labels": int64} from a tensor or Arrow store.

    `pin`: gather host batches straight into pinned (page-locked) memory, so that their copy to a CUDA
    device is asynchronous (accelerate's non_blocking) and the DataLoader's own pinning finds nothing to do.
    """

    def __init__(self, pixels: torch.Tensor | ArrowPixels, labels: torch.Tensor, pin: bool = False):
        self.pixels = pixels
        self.labels = labels if isinstance(pixels, ArrowPixels) else labels.to(pixels.device)
        self.pin = pin

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if isinstance(self.pixels, ArrowPixels) or self.pixels.device.type == "cpu":
            return self._host_batch(np.asarray(indices, dtype=np.int64))
        # A pageable host-to-device copy blocks the host until the GPU has drained its queue: the
        # indices go through pinned memory, asynchronously, and the gather stays on the device.
        index = torch.tensor(indices, dtype=torch.int64).pin_memory().to(self.pixels.device, non_blocking=True)
        return {"pixel_values": self.pixels.index_select(0, index), "labels": self.labels.index_select(0, index)}

    def _host_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        # numpy's gather: torch 2.13's index_select on CPU uint8 runs at ~65k img/s (32 px), numpy ~3M.
        store = self.pixels if isinstance(self.pixels, ArrowPixels) else _NumpyRows(self.pixels.numpy())
        pixels = torch.empty((len(rows), *store.item_shape), dtype=torch.uint8, pin_memory=self.pin)
        store.gather(rows, out=pixels.numpy())
        labels = self.labels[rows]
        return {"pixel_values": pixels, "labels": labels.pin_memory() if self.pin else labels}


def batch_collator(features):
    """Batches from `__getitems__` are already collated; lists of items go through the HF collator, or, encoded
    (data.gpu_decode), stay a list of files."""
    if isinstance(features, dict):
        return features
    if features and "encoded" in features[0]:
        return collate_encoded(features)
    return default_data_collator(features)


@dataclass(frozen=True)
class LoaderSettings:
    """The DataLoader options a store works with. The training side turns them into TrainingArguments'
    dataloader_* keys (and accelerate's); the data side only says what fits."""

    num_workers: int
    pin_memory: bool  # page-locked batches: their copy to a CUDA device does not block the host
    persistent_workers: bool
    prefetch_factor: int | None  # batches each worker loads ahead; torch refuses it without workers
    non_blocking: bool  # accelerate copies batches to the device asynchronously (needs pinned batches)
    # None: accelerate's default. False for a stream on one process: accelerate would otherwise "dispatch"
    # it, reading every batch on the main process and concatenating a copy of it.
    dispatch_batches: bool | None = None


@dataclass(frozen=True)
class LoaderChoice:
    kind: str
    reason: str
    settings: LoaderSettings
    notes: tuple[str, ...] = ()  # requested DataLoader options this store overrides, for the log


@dataclass(frozen=True)
class LoaderRequest:
    """What the recipe asks of the DataLoader (its training.dataloader_* values); `explicit`: the keys it set."""

    num_workers: int = 0
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    pin_memory: bool = True
    explicit: frozenset[str] = frozenset()


def choose_loader(
    requested: str, streaming: bool, nbytes: int, device: torch.device,
    request: LoaderRequest = LoaderRequest(), world_size: int = 1,
) -> LoaderChoice:
    """The fastest path that fits (on the device, else in RAM, else memory-mapped), with its DataLoader settings."""
    kind, reason = _store_kind(requested, streaming, nbytes, device)
    settings, notes = loader_settings(kind, device, request, streaming and world_size == 1)
    return LoaderChoice(kind, reason, settings, notes)


def _store_kind(requested: str, streaming: bool, nbytes: int, device: torch.device) -> tuple[str, str]:
    if streaming:
        return "decode", "a stream is decoded as it arrives"
    if requested != "auto":
        return requested, "data.loader"
    free = _free_accelerator_bytes(device)
    if free and nbytes < DEVICE_SHARE * free:
        return "device", f"{nbytes / 1e9:.2f} GB fit in {free / 1e9:.0f} GB free on {device}"
    ram = _available_ram_bytes()
    if nbytes < MEMORY_SHARE * ram:
        return "memory", f"{nbytes / 1e9:.2f} GB fit in {ram / 1e9:.0f} GB of available RAM"
    return "mmap", f"{nbytes / 1e9:.2f} GB: too large for the device and RAM"


def loader_settings(
    kind: str, device: torch.device, request: LoaderRequest, lone_stream: bool = False
) -> tuple[LoaderSettings, tuple[str, ...]]:
    """The DataLoader options that work with `kind` on `device`, and notes on the requested ones overridden.

    device: a batch is an index gather on the accelerator. No workers (CUDA tensors do not cross processes)
        and no pinning: torch pins every batch when pin_memory is on, and pinning a CUDA tensor raises.
    memory, mmap: a batch is one gather (mmap: on threads that page in), straight into pinned memory on
        CUDA; workers would only add copies between processes.
    decode: workers decode; the DataLoader pins their batches in a thread of its own; persistent workers,
        so that an epoch does not start by forking them again.
    Without workers torch refuses persistent_workers and prefetch_factor, so those go with them.
    """
    cuda = device.type == "cuda"
    workers = 0 if kind in GATHER_STORES else request.num_workers
    settings = LoaderSettings(
        num_workers=workers,
        pin_memory=cuda and kind != "device" and request.pin_memory,
        persistent_workers=workers > 0 and (request.persistent_workers or "persistent_workers" not in request.explicit),
        prefetch_factor=request.prefetch_factor if workers > 0 else None,
        non_blocking=cuda,
        dispatch_batches=False if lone_stream else None,
    )
    notes = tuple(
        f"training.dataloader_{key} {getattr(request, key)!r} -> {getattr(settings, key)!r} ({why})"
        for key, why in (
            ("num_workers", f"data.loader {kind}: a batch is one gather, workers would only add copies"),
            ("persistent_workers", "no workers to keep"),
            ("prefetch_factor", "no workers to prefetch"),
            ("pin_memory", "batches already on the device cannot be pinned"),
        )
        if key in request.explicit and getattr(request, key) != getattr(settings, key)
    )
    return settings, notes


def _free_accelerator_bytes(device: torch.device) -> int:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    return 0


def _available_ram_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def make_store(cached: datasets.Dataset, kind: str, device: torch.device) -> UInt8Images:
    """A UInt8Images over a cached split, held where `kind` says."""
    if cached._indices is not None:
        cached = cached.flatten_indices()
    pixels = ArrowPixels(cached)
    labels = torch.from_numpy(np.array(cached.data.table.column("label").to_numpy(), dtype=np.int64))
    if kind == "mmap":
        return UInt8Images(pixels, labels, pin=device.type == "cuda")
    tensor = pixels.to_tensor()
    if kind == "device":
        return UInt8Images(tensor.to(device), labels.to(device))
    return UInt8Images(tensor, labels, pin=device.type == "cuda")
