"""A training stream that a resumed run continues where its checkpoint left it, without decoding what it skips.

    stream = ResumableStream(decoded_stream, decoder)            # what the Trainer iterates
    stream.resume_at(StreamPosition(passes=3, batches=812), batch_size=1024)

The gap filled: on resume the Trainer skips the batches already trained by drawing them from the loader
and throwing them away (accelerate's skip_first_batches), so a stream decodes every skipped image; and
it counts from the first pass, since a stream's "epoch" is sized at max_steps (transformers 5.24): a run
resumed in its 300th pass over ImageNet replays pass 0. Here the position (passes finished, batches
handed out in this one) travels in the checkpoint (VitTrainer counts it), set_epoch continues from that
pass, and the rows a DataLoader worker already handed out are dropped before decoding (BatchDecoder's
skip_rows). torch hands an iterable dataset's batches out from its workers in turn (worker 0, 1, ...,
restarted each epoch), so after B batches worker w of W has handed out B // W batches, plus one when
w < B % W. W counts the workers that read: datasets stops those beyond the stream's shards at once
(worker w reads shards w, w + W, ...), so W is the smaller of the two, and the others handed out
nothing. Exact while every worker still has rows and the run resumes with the batch size and
dataloader_num_workers it trained with (the workers' shares of the shards depend on their number); near
a pass's end, where workers run out at different times, a few images may be seen twice or skipped, and
so may the rows around a skipped bad image.
One process: in DDP, accelerate dispatches a stream's batches from rank 0, and the Trainer's own skip stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import datasets
import torch

from .decode import BatchDecoder


@dataclass
class StreamPosition:
    """Where a training stream is: passes finished, and batches handed out in the current pass."""

    passes: int = 0
    batches: int = 0

    def advance(self, batches: int) -> None:
        """`batches` more handed out in this pass; none at all means the pass is over."""
        if batches:
            self.batches += batches
        else:
            self.passes, self.batches = self.passes + 1, 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict | None) -> StreamPosition:
        return cls(**state) if state else cls()


class ResumableStream(torch.utils.data.IterableDataset):
    """A decoded training stream (datasets' IterableDataset, decoded by `decoder` in a lazy map) that starts at
    a StreamPosition. Iterate it as the stream itself; set_epoch(e) is pass `start.passes + e`."""

    def __init__(self, decoded: datasets.IterableDataset, decoder: BatchDecoder):
        self.decoded, self.decoder = decoded, decoder
        self.start = StreamPosition()
        self.batch_size = 1

    def resume_at(self, position: StreamPosition, batch_size: int) -> None:
        """Start at `position`, for a DataLoader of `batch_size` (the one the run trained with)."""
        self.start = StreamPosition(position.passes, position.batches)
        self.batch_size = batch_size
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        # datasets keeps the epoch in shared memory, so persistent DataLoader workers see it too.
        self.decoded.set_epoch(self.start.passes + epoch)

    @property
    def epoch(self) -> int:
        return self.decoded.epoch

    @property
    def features(self):
        return self.decoded.features

    def __iter__(self):
        # In the DataLoader worker: the decoder is this worker's copy, the same object as the map's function.
        in_resumed_pass = self.decoded.epoch == self.start.passes
        worker = torch.utils.data.get_worker_info()
        self.decoder.skip_rows = rows_handed_out(self.start.batches, self.batch_size, worker,
                                                 self.decoded.num_shards) if in_resumed_pass else 0
        return iter(self.decoded)


def rows_handed_out(batches: int, batch_size: int, worker, shards: int) -> int:
    """Rows that `worker` (torch's WorkerInfo; None: the main process) had handed out when the DataLoader had
    handed out `batches`, for a stream of `shards` shards (see the module's docstring)."""
    if worker is None:
        return batches * batch_size
    reading = min(worker.num_workers, shards)  # datasets stops the workers beyond the shards
    if worker.id >= reading:
        return 0
    return (batches // reading + (1 if worker.id < batches % reading else 0)) * batch_size
