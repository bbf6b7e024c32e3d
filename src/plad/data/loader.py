"""A DataLoader whose position Lightning saves in checkpoints, so a resumed run sees exactly the
batches an uninterrupted run would have seen (Lightning resumes any loader that implements
``state_dict`` / ``load_state_dict``).

Under several processes (torch.distributed initialised, e.g. Lightning DDP) the sampler shards
every epoch itself, like ``DistributedSampler``: one (seed, epoch) permutation, padded by wrapping
to a multiple of the world size, rank r taking positions r, r + world, ... So the trainer configs
set ``use_distributed_sampler: false``: Lightning must not swap in its own sampler, which would
lose the resumable position (and cannot re-instantiate this loader)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from plad.checks import InputError


def dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch), takes this rank's share (``rank``/``world``
    default to torch.distributed's) and can skip the first ``start`` indices of it."""

    def __init__(
        self, n: int, seed: int, shuffle: bool = True, rank: int | None = None, world: int | None = None
    ) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world = (rank, world) if rank is not None and world is not None else dist_rank_world()
        if not 0 <= self.rank < self.world:
            raise InputError(f"sampler rank: expected 0 <= rank < world, got rank {self.rank}, world {self.world}")
        self.epoch, self.start = 0, 0

    def _share(self) -> int:
        return -(-self.n // self.world)  # every rank the same count: ranks step together

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.n))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        if self.world > 1:
            total = self._share() * self.world
            order = (order * (-(-total // max(self.n, 1))))[:total][self.rank :: self.world]
        return iter(order[self.start :])

    def __len__(self) -> int:
        return self._share() - self.start


class ResumableLoader(DataLoader):
    """DataLoader over an ``EpochShuffleSampler`` that knows its (epoch, batches served).

    Each ``iter()`` starts the next epoch (Lightning stops iterating at ``len`` without exhausting
    the loader, so the epoch cannot advance on exhaustion), except right after
    ``load_state_dict``, which continues the saved epoch where it stopped.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: int | None = None,
        world: int | None = None,
        accumulate: int = 1,
        counts: Callable[[dict[str, Any]], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``accumulate`` > 1: batches come in windows of that many micro-batches (one optimizer
        step), each carrying ``window`` = [examples, first-sequence tokens, micro-batches] of its
        window (``counts`` gives a batch's first two), so losses can be normalised by the whole
        step's size before its first backward."""
        if accumulate < 1 or (accumulate > 1 and counts is None):
            raise InputError(
                f"accumulate_grad_batches: expected an int >= 1 (and a counts function), got {accumulate!r}"
            )
        self.sampler_ = EpochShuffleSampler(len(dataset), seed, shuffle, rank, world)  # type: ignore[arg-type]
        self.accumulate, self.counts = accumulate, counts
        super().__init__(dataset, batch_size=batch_size, sampler=self.sampler_, **kwargs)
        self.full_len = super().__len__()
        self.served = 0
        self._started = False
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self._resume is not None:
            epoch, served = self._resume["epoch"], self._resume["served"]
            if served >= self.full_len:
                epoch, served = epoch + 1, 0
            self._resume = None
        else:
            epoch, served = (self.sampler_.epoch + 1 if self._started else 0), 0
        self._started = True
        self.sampler_.epoch, self.served = epoch, served
        self.sampler_.start = served * self.batch_size  # type: ignore[operator]
        batches = super().__iter__()
        while window := list(islice(batches, self.accumulate)):
            if self.accumulate > 1:
                size = sum(self.counts(b) for b in window)  # type: ignore[misc]
                for b in window:
                    b["window"] = torch.cat([size, size.new_tensor([len(window)])])
            for batch in window:
                self.served += 1
                yield batch

    def __len__(self) -> int:
        return self.full_len

    def state_dict(self) -> dict[str, int]:
        # Lightning does not prefetch from sized loaders, so every batch served has been trained on.
        return {"epoch": self.sampler_.epoch, "served": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)
