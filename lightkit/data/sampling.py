"""Length-grouped training order: batches of similar lengths, so dynamic padding pads little.

transformers' `LengthGroupedSampler` (the Trainer's `group_by_length`) has the idea but not what
lightkit's loaders need: the order must be a function of (seed, epoch) alone and resumable from a
position (torchdata's `StatefulDistributedSampler` saves how many indices it yielded), and each
rank must group its own shard under DDP. So the grouping is a reordering inserted under
`StatefulDistributedSampler`: it shuffles and shards as usual, then, within each mega-batch of
`batch_size * 50` indices, sorts by length and shuffles the order of the resulting full batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch.utils.data.distributed import DistributedSampler
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

MEGA_BATCHES = 50


def sequence_lengths(dataset: Dataset, column: str = "input_ids") -> list[int]:
    """Each row's token count, read from the Arrow lists' offsets (no row is decoded to Python)."""
    return pc.list_value_length(dataset.with_format("arrow")[column]).to_pylist()


class _GroupedOrder(DistributedSampler):
    lengths: Sequence[int]
    batch_size: int

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())  # shuffled by (seed, epoch), this rank's shard
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        size = self.batch_size * MEGA_BATCHES
        ordered: list[int] = []
        for start in range(0, len(indices), size):
            mega = sorted(indices[start : start + size], key=lambda i: -self.lengths[i])
            batches = [mega[b : b + self.batch_size] for b in range(0, len(mega), self.batch_size)]
            # Only full batches move: a short last batch stays last, so the DataLoader's chunks of
            # batch_size still coincide with these groups.
            full = [b for b in batches if len(b) == self.batch_size]
            rest = [b for b in batches if len(b) != self.batch_size]
            for k in torch.randperm(len(full), generator=g).tolist():
                ordered += full[k]
            for b in rest:
                ordered += b
        return iter(ordered)


class LengthGroupedSampler(StatefulDistributedSampler, _GroupedOrder):
    """`StatefulDistributedSampler` (resumable, sharded, (seed, epoch)-determined) whose per-epoch
    order groups similar lengths into the same batch (see the module docstring)."""

    def __init__(self, dataset: Sequence, lengths: Sequence[int], batch_size: int, **kwargs: object) -> None:
        super().__init__(dataset, **kwargs)  # type: ignore[arg-type]
        if len(lengths) != len(dataset):
            raise ValueError(f"lengths has {len(lengths)} entries for a dataset of {len(dataset)}")
        self.lengths, self.batch_size = list(lengths), batch_size
