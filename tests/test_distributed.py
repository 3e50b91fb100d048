"""alignrec.distributed: how users are cut into shards and shards given to ranks, and what a
single process (no launcher) does. The multi-process paths run in tests/evaluate and tests/serve."""

from __future__ import annotations

import pytest

from alignrec.distributed import Ranks, launcher_ranks, process_group, shard_bounds
from alignrec.errors import InputError


@pytest.mark.parametrize(("rows", "size", "expected"), [
    (5, 0, [(0, 5)]), (5, 2, [(0, 2), (2, 4), (4, 5)]), (4, 2, [(0, 2), (2, 4)]), (3, 1, [(0, 1), (1, 2), (2, 3)]),
    (3, 10, [(0, 3)]), (0, 4, []),
])
def test_shard_bounds(rows, size, expected):
    assert shard_bounds(rows, size) == expected


def test_shard_i_goes_to_rank_i_modulo_world_size():
    assert [list(Ranks(rank, 3).shards(7)) for rank in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert list(Ranks().shards(4)) == [0, 1, 2, 3]
    assert list(Ranks(2, 4).shards(2)) == []  # more ranks than shards: some search nothing


def test_each_rank_takes_its_own_gpu_when_the_device_is_auto(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Ranks(3, 8, local_rank=1).device("auto") == "cuda:1"
    assert Ranks(3, 8, local_rank=1).device("cuda") == "cuda:1"
    assert Ranks(3, 8, local_rank=1).device("cuda:0") == "cuda:0"  # asked for by name: kept
    assert Ranks(3, 8, local_rank=1).device("cpu") == "cpu"
    assert Ranks().device("auto") == "auto"  # one process: resolved as before (alignrec.llm.recommender)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Ranks(1, 2, local_rank=1).device("auto") == "auto"


def test_one_process_needs_no_process_group(monkeypatch):
    import torch.distributed as dist

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launcher_ranks() == Ranks(0, 1, 0)
    with process_group("auto") as ranks:
        assert ranks == Ranks(0, 1, 0) and not dist.is_initialized()
        assert ranks.gather(5) == [5] and ranks.broadcast("x") == "x" and ranks.from_main(lambda: 7) == 7
        ranks.barrier()

        def refuse() -> None:
            raise InputError("refused")

        with pytest.raises(InputError, match="refused"):
            ranks.from_main(refuse)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert launcher_ranks() == Ranks(3, 4, 2) and not launcher_ranks().is_main
