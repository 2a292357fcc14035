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


def _thread_count() -> int:
    import os

    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def _switch_layouts(num_switches: int) -> tuple[int, int]:
    from rest_megatron.distributed import ParallelLayout, init_model_parallel

    before = _thread_count()
    for i in range(num_switches):
        init_model_parallel(ParallelLayout(tp=1 + i % 2))
    return before, _thread_count()


def _idle_cpu_seconds(seconds: float) -> float:
    import time

    started = time.process_time()
    time.sleep(seconds)
    return time.process_time() - started


def test_ranks_do_not_keep_threads_or_burn_cpu_after_layout_switches(gloo) -> None:
    """Each gloo group holds polling threads: ~50 per layout, so leaked groups pile up across tests."""
    pool = gloo(2)
    pool.run(_switch_layouts, 1)  # first Megatron import and layout start a few threads for good
    start = pool.run(_thread_count)
    during = pool.run(_switch_layouts, 20)
    assert all(after - before < 100 for before, after in during), during  # only the last layout's groups live
    end = pool.run(_thread_count)
    assert all(e - s <= 4 for s, e in zip(start, end)), (start, end)
    idle = pool.run(_idle_cpu_seconds, 5.0)
    assert all(cpu < 0.05 for cpu in idle), idle  # < 1% of a core over 5 s
