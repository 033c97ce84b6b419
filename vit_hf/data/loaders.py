"""Loaders chosen by the data: batches are gathers from a uint8 store, not per-image Python.

    device   the whole split on the accelerator; a batch is an index gather there (airbench's way)
    memory   the whole split in RAM; a gather, then one copy of the batch to the device
    mmap     the cached Arrow file, memory-mapped; DataLoader workers gather and page in
    decode   no cache: each image decoded in DataLoader workers at every epoch (streams always)

Each store is a torch Dataset with `__getitems__`, so the Trainer's own DataLoader, sampler,
accelerate's DDP sharding and its resume-time batch skipping all work unchanged: torch calls
`__getitems__(indices)` with a whole batch of indices, and `batch_collator` passes the batch on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import torch
from transformers import default_data_collator

logger = logging.getLogger(__name__)

LOADERS = ("auto", "device", "memory", "mmap", "decode")
# Share of free accelerator memory the splits may take on the device: the model, optimizer state
# and activations need the rest.
DEVICE_SHARE = 0.5
# Share of available RAM for the in-memory store (DataLoader workers, the OS page cache need the rest).
MEMORY_SHARE = 0.4


class ArrowPixels:
    """The `pixels` column of a cached Arrow dataset as uint8 [N, 3, S, S] chunks, zero-copy (memory-mapped)."""

    def __init__(self, ds: datasets.Dataset):
        if ds._indices is not None:
            ds = ds.flatten_indices()
        column = ds.data.table.column("pixels")
        shape = ds.features["pixels"].shape
        self.chunks = [_chunk_array(chunk, shape) for chunk in column.chunks]
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    def gather(self, indices: np.ndarray) -> np.ndarray:
        if len(self.chunks) == 1:
            return self.chunks[0][indices]
        which = np.searchsorted(self.starts, indices, side="right") - 1
        out = np.empty((len(indices), *self.chunks[0].shape[1:]), np.uint8)
        for c in np.unique(which):
            mask = which == c
            out[mask] = self.chunks[c][indices[mask] - self.starts[c]]
        return out

    def to_tensor(self) -> torch.Tensor:
        """Everything in one contiguous tensor in RAM (a copy)."""
        return torch.from_numpy(np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0].copy())


def _chunk_array(chunk, shape) -> np.ndarray:
    # Array3D is an extension type over nested lists: flattening them reaches the uint8 buffer,
    # which numpy then views without a copy (the Arrow file is memory-mapped).
    values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or pa.types.is_large_list(values.type):
        values = values.flatten()
    return values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape)


@dataclass
class _NumpyRows:
    array: np.ndarray

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


class UInt8Images(torch.utils.data.Dataset):
    """Items and whole batches {"pixel_values": uint8, "labels": int64} from a tensor or Arrow store."""

    def __init__(self, pixels: torch.Tensor | ArrowPixels, labels: torch.Tensor):
        self.pixels = pixels
        self.labels = labels if isinstance(pixels, ArrowPixels) else labels.to(pixels.device)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if isinstance(self.pixels, ArrowPixels) or self.pixels.device.type == "cpu":
            # numpy's gather: torch 2.13's index_select on CPU uint8 runs at ~65k img/s (32 px), numpy ~3M.
            rows = np.asarray(indices, dtype=np.int64)
            store = self.pixels if isinstance(self.pixels, ArrowPixels) else _NumpyRows(self.pixels.numpy())
            return {"pixel_values": torch.from_numpy(store.gather(rows)), "labels": self.labels[rows]}
        index = torch.as_tensor(indices, device=self.pixels.device)
        return {"pixel_values": self.pixels.index_select(0, index), "labels": self.labels.index_select(0, index)}


def batch_collator(features):
    """Batches from `__getitems__` are already collated; lists of items go through the HF collator."""
    if isinstance(features, dict):
        return features
    return default_data_collator(features)


@dataclass
class LoaderChoice:
    kind: str
    reason: str


def choose_loader(requested: str, streaming: bool, nbytes: int, device: torch.device) -> LoaderChoice:
    """The fastest path that fits: on the device, else in RAM, else memory-mapped."""
    if streaming:
        return LoaderChoice("decode", "a stream is decoded as it arrives")
    if requested != "auto":
        return LoaderChoice(requested, "data.loader")
    free = _free_accelerator_bytes(device)
    if free and nbytes < DEVICE_SHARE * free:
        return LoaderChoice("device", f"{nbytes / 1e9:.2f} GB fit in {free / 1e9:.0f} GB free on {device}")
    ram = _available_ram_bytes()
    if nbytes < MEMORY_SHARE * ram:
        return LoaderChoice("memory", f"{nbytes / 1e9:.2f} GB fit in {ram / 1e9:.0f} GB of available RAM")
    return LoaderChoice("mmap", f"{nbytes / 1e9:.2f} GB: too large for the device and RAM")


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
        return UInt8Images(pixels, labels)
    tensor = pixels.to_tensor()
    if kind == "device":
        return UInt8Images(tensor.to(device), labels.to(device))
    return UInt8Images(tensor, labels)
