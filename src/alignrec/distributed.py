"""Inference on several processes: the ranks of a ``torchrun`` / ``accelerate launch`` job, and how
users are split among them.

One home for ``alignrec evaluate`` and ``alignrec precache``: the users, in their order, are cut
into shards of consecutive users (:func:`shard_bounds`), and shard ``i`` belongs to rank
``i % world_size`` (:meth:`Ranks.shards`) — a static assignment, the same on every rank, so no
process has to hand out work. A single process (no launcher, or ``WORLD_SIZE`` 1) is rank 0 of 1
and never touches ``torch.distributed``. With ``WORLD_SIZE`` > 1 the launcher's environment
(``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) starts a process group: ``nccl`` when
the ranks run on GPUs, ``gloo`` on CPUs.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from alignrec.errors import AlignrecError

T = TypeVar("T")

# How long a rank may wait for the others at a barrier. The ranks' shares differ by up to a whole
# shard (2,000 users can take more than half an hour of CPU beam search), longer than torch's
# default (10 to 30 minutes); a rank that dies does not leave the others waiting that long, since
# the launcher stops the whole job.
TIMEOUT = datetime.timedelta(hours=12)


def shard_bounds(num_rows: int, shard_users: int) -> list[tuple[int, int]]:
    """``(start, stop)`` positions of each shard of ``num_rows`` users (``shard_users`` 0 = one shard)."""
    size = shard_users or max(num_rows, 1)
    return [(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job (rank 0 of 1 without a launcher)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank on this machine: which GPU is this process's

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes what is shared (manifest, merged files, the store)."""
        return self.rank == 0

    def shards(self, count: int) -> range:
        """This rank's shards among ``count``: shard i goes to rank i % world_size."""
        return range(self.rank, count, self.world_size)

    def device(self, device: str) -> str:
        """Under a launcher, ``auto`` (on a machine with CUDA) and ``cuda`` are this rank's GPU,
        ``cuda:LOCAL_RANK``; an explicit ``cuda:N`` or ``cpu`` is kept."""
        if self.distributed and device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                return f"cuda:{self.local_rank}"
        return device

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` in rank order on rank 0 (an empty list on the other ranks)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, values, dst=0)
        return values or []

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0 and its result on every rank; a user error there (an
        :class:`AlignrecError`) is raised on every rank, so that none waits for the others."""
        result: Any = None
        error: AlignrecError | None = None
        if self.is_main:
            try:
                result = compute()
            except AlignrecError as raised:
                if not self.distributed:
                    raise
                error = raised
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result


def launcher_ranks() -> Ranks:
    """The ranks the launcher's environment describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Ranks(rank, world_size, int(os.environ.get("LOCAL_RANK", str(rank))))


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[Ranks]:
    """The launcher's ranks, with a process group while the block runs when there are several
    (``nccl`` when ``device`` is a GPU or ``auto`` with CUDA present, else ``gloo``). A group
    started by the caller is used as it is and left open."""
    ranks = launcher_ranks()
    if not ranks.distributed:
        yield ranks
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        yield Ranks(dist.get_rank(), dist.get_world_size(), ranks.local_rank)
        return
    on_gpu = torch.cuda.is_available() and ranks.device(device).startswith("cuda")
    if on_gpu:
        torch.cuda.set_device(torch.device(ranks.device(device)))  # nccl's collectives use the current GPU
    dist.init_process_group(backend="nccl" if on_gpu else "gloo", timeout=TIMEOUT)
    try:
        yield ranks
        # Every rank leaves together: a rank that tears the group down while another is still
        # finishing its last collective aborts that rank (gloo: "terminate called without an
        # active exception", seen under load when precache had nothing to compute).
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    dist.destroy_process_group()
