"""The order of an indexed source's samples: epochs of permutations, consumed by position.

An indexed source (tar shards, a Hugging Face dataset) can read any sample by its index, so the
order is this module's business and not the readers': a worker process or a restart changes
nothing. Training draws sample positions, not samples:

    slot   = step * micro_steps + micro                 one batch of one rank
    g      = (slot * world_size + rank) * batch_size + j       j < batch_size
    epoch, offset = divmod(g, n)                        n samples in the training split
    sample = permutation(seed, epoch)[offset]           every sample once per epoch

so the ranks' batches of a step are consecutive runs of one permutation: in an epoch every
training sample is drawn exactly once over all ranks (no duplicates, no gaps), and the
batch of ``(step, micro)`` on rank ``r`` is a pure function of ``(seed, step, micro, rank,
world_size)``.

A run resumed on another number of processes (or with another batch size) continues at the
next position of the run it resumes, not at where its own formula would put the step: the
checkpoint records :meth:`EpochOrder.consumed` (the positions drawn before its step, over all
ranks) and :meth:`EpochOrder.rebase` makes the resumed order count on from there:

    g = position + ((step - base_step) * micro_steps + micro) * world_size * batch_size
        + rank * batch_size + j

The position ``g`` also seeds the sample's augmentation (its crop), so a sample seen in two
epochs gets two crops.
"""

from __future__ import annotations

import torch

from atoken.core.errors import ConfigError

__all__ = ["EpochOrder"]


class EpochOrder:
    """Positions and samples of ``n`` indexed samples for one rank.

    Args:
        n: samples in the training split (indices ``0..n-1``).
        batch_size: samples per batch of one rank.
        seed, rank, world_size: the run's seed and this process's place.
        micro_steps: batches per optimizer step (``[optim] grad_accum``).
        shuffle: a fresh permutation per epoch (False: index order, every epoch).

    Raises:
        ConfigError: no samples, or invalid sizes.
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        micro_steps: int = 1,
        shuffle: bool = True,
    ) -> None:
        if n < 1:
            raise ConfigError("the training split holds no samples")
        if batch_size < 1 or micro_steps < 1:
            raise ConfigError(f"need batch_size, micro_steps >= 1, got {batch_size}, {micro_steps}")
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise ConfigError(f"need 0 <= rank < world_size, got {rank}, {world_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.micro_steps = rank, world_size, micro_steps
        self.shuffle = shuffle
        self._perm: tuple[int, torch.Tensor] | None = None  # (epoch, permutation [n])
        self.base = (0, 0)  # (step, position): the order counts on from here (rebase)

    def positions(self, step: int, micro: int) -> range:
        """The global positions ``g`` of batch ``(step, micro)`` on this rank."""
        base_step, base = self.base
        slot = (step - base_step) * self.micro_steps + micro
        first = base + (slot * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def consumed(self, step: int) -> int:
        """The positions drawn over all ranks before ``step``: where a run that resumes at
        ``step`` goes on, whatever its number of processes."""
        base_step, base = self.base
        return base + (step - base_step) * self.micro_steps * self.world_size * self.batch_size

    def rebase(self, step: int, position: int) -> None:
        """Make batch ``(step, 0)`` start at global position ``position`` (the
        :meth:`consumed` of the run being resumed).

        Raises:
            ConfigError: a negative step or position.
        """
        if int(step) < 0 or int(position) < 0:
            raise ConfigError(f"a data position needs step, position >= 0, got {step}, {position}")
        self.base = (int(step), int(position))

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``: int64 ``[n]`` (the last one is cached)."""
        if self._perm is None or self._perm[0] != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7_919 + 1)
                perm = torch.randperm(self.n, generator=g)
            else:
                perm = torch.arange(self.n)
            self._perm = (epoch, perm)
        return self._perm[1]

    def sample(self, g: int) -> int:
        """The training-split index at global position ``g``."""
        epoch, offset = divmod(g, self.n)
        return int(self.permutation(epoch)[offset])

    def generator(self, g: int) -> torch.Generator:
        """The augmentation generator of the sample at position ``g`` (its crop)."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + g) * 2 + 1)
