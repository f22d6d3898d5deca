"""A training sampler whose order is a function of (seed, epoch), for exact resume and DDP.

``EpochSampler`` shuffles with a generator seeded by ``(seed, epoch)``, gives each process its
share (``order[rank::world]``, padded like ``DistributedSampler``) and yields ``(index,
sample_seed)`` pairs: ``DetectionDataset`` draws a sample's augmentation from ``sample_seed``
(a function of seed, epoch and index), so what a sample looks like depends neither on the
number of data-loader workers, nor on the number of processes, nor on where a run was resumed.

The epoch is set from outside (``ResumeState``) rather than through ``set_epoch``, which
Lightning calls before a resumed run's loop state is restored; ``skip`` drops the first
samples of the next pass once (the batches a resumed run has already trained on).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

_MIX = 1_000_003  # a prime: seeds of (seed, epoch, index) triples do not collide in practice


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded ``seed``."""
    return ((seed * _MIX + epoch) * _MIX + index) % (2**63)


class EpochSampler(Sampler):
    """Shuffled by (seed, epoch), this rank's share, ``(index, sample_seed)`` items."""

    def __init__(self, size: int, seed: int, world: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world} processes")
        self.size, self.seed, self.world, self.rank = int(size), int(seed), int(world), int(rank)
        self.epoch = 0
        self.skip = 0  # samples to drop from the front of the next pass only

    def __len__(self) -> int:
        return math.ceil(self.size / self.world)

    def order(self) -> list[int]:
        """This rank's indices for the current epoch (all of them, before ``skip``)."""
        generator = torch.Generator().manual_seed(self.seed * _MIX + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        total = len(self) * self.world
        order += order[: total - len(order)]  # pad so every rank gets the same count
        return order[self.rank : total : self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine = self.order()[self.skip :]
        self.skip = 0
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in mine])
