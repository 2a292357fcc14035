"""The multi-process harness itself: results, errors and hangs on real gloo ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from rest_megatron.testing.gloo import DistributedRunError, GlooPool


def _allreduce_rank() -> float:
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    return value.item()


def _raise_on_rank_one() -> int:
    if dist.get_rank() == 1:
        raise ValueError("boom on rank one")
    return dist.get_rank()


def _hang_on_rank_zero() -> None:
    if dist.get_rank() == 0:
        import time

        time.sleep(60)
    dist.barrier()


def test_results_come_back_in_rank_order(gloo) -> None:
    assert gloo(2).run(_allreduce_rank) == [3.0, 3.0]


def test_an_exception_names_the_rank_and_the_pool_recovers(gloo) -> None:
    pool = gloo(2)
    with pytest.raises(DistributedRunError, match=r"rank 1 raised:\nValueError: boom on rank one"):
        pool.run(_raise_on_rank_one)
    assert pool.run(_allreduce_rank) == [3.0, 3.0]


def test_a_hang_fails_fast_with_stack_dumps() -> None:
    with GlooPool(2, collective_timeout_s=30) as pool:
        with pytest.raises(DistributedRunError) as info:
            pool.run(_hang_on_rank_zero, timeout_s=5)
    text = str(info.value)
    assert "rank 0 did not finish in time" in text
    assert "_hang_on_rank_zero" in text  # faulthandler's dump of the stuck frame
