"""The engine's prefix cache: longest common prefix, at least one token left to run, LRU bound."""

from __future__ import annotations

import torch

from rest_megatron.rollout.engine.prefix_cache import PrefixCache, common_prefix_length


def _kv(length: int, tag: float = 0.0):
    positions = torch.arange(length, dtype=torch.float32).view(1, 1, length, 1) + tag
    return [(positions.clone(), -positions.clone()) for _ in range(2)]


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([5] * 100 + [1], [5] * 100 + [2]) == 100


def test_lookup_returns_the_longest_prefix_and_leaves_a_token() -> None:
    cache = PrefixCache(max_tokens=100)
    cache.insert([1, 2, 3], _kv(3))
    cache.insert([1, 2, 3, 4, 5], _kv(5, tag=10))
    n, kv = cache.lookup([1, 2, 3, 4, 9])
    assert n == 4 and kv[0][0].shape[2] == 4 and float(kv[0][0][0, 0, 3, 0]) == 13.0
    n, kv = cache.lookup([1, 2, 3])  # fully cached: the last token must still be run
    assert n == 2 and kv[1][1].shape[2] == 2
    assert cache.lookup([7, 8]) == (0, None)


def test_lru_bound_and_clear() -> None:
    cache = PrefixCache(max_tokens=8)
    cache.insert([1, 2, 3, 4], _kv(4))
    cache.insert([5, 6, 7, 8], _kv(4))
    cache.lookup([1, 2, 3, 4, 0])  # touch the first: the second is now the oldest
    cache.insert([9, 9, 9], _kv(3))
    assert cache.lookup([5, 6, 7, 8, 0])[0] == 0 and cache.lookup([1, 2, 3, 4, 0])[0] == 4
    assert cache.num_tokens <= 8
    cache.clear()
    assert len(cache) == 0 and cache.lookup([1, 2, 3, 4, 0]) == (0, None)
    PrefixCache(0).insert([1], _kv(1))  # disabled cache stores nothing and does not fail
