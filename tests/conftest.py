"""Shared fixtures: long-lived gloo worker pools for the distributed tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from rest_megatron.testing.gloo import GlooPool


@pytest.fixture(scope="session")
def gloo() -> Iterator[Callable[[int], GlooPool]]:
    """`gloo(n)` returns a pool of n gloo ranks shared by the whole session (imports cost 15-25 s)."""
    pools: dict[int, GlooPool] = {}

    def get(world_size: int) -> GlooPool:
        if world_size not in pools:
            pools[world_size] = GlooPool(world_size)
        return pools[world_size]

    yield get
    for pool in pools.values():
        pool.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
