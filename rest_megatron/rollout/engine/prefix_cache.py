"""An LRU cache of attention keys/values by token prefix, so multi-turn requests skip re-prefill.

A multi-turn trajectory re-sends its whole history each turn, and the n samples of a GRPO group
share their prompt. Entries are keyed by the token IDs whose KV they hold; a lookup returns the
longest common prefix with any entry (a radix cache in spirit, a flat list in practice: the
embedded engine serves tiny models and a few hundred entries). Tensors are never modified in place
after insertion, so an entry can be shared by several running requests.

`clear()` is called by `/flush_cache` and after every weight update: KV computed by old weights
must never be mixed with new ones.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

LayerKV = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer (keys, values), each [1, kv_heads, L, head_dim]."""


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix (binary search over C-speed slice comparisons)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while low < high:  # invariant: a[:low] == b[:low] and a[:high] != b[:high]
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def slice_kv(kv: LayerKV, length: int) -> LayerKV:
    """The first `length` positions of every layer (views; callers never write into them)."""
    return [(k[:, :, :length], v[:, :, :length]) for k, v in kv]


class PrefixCache:
    """LRU map from token prefixes to their KV, bounded by the total number of cached tokens."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[int, ...], tuple[list[int], LayerKV]] = OrderedDict()
        self._num_tokens = 0
        self.hits_tokens = 0
        self.lookups = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_tokens(self) -> int:
        """Tokens held by all entries."""
        return self._num_tokens

    def lookup(self, token_ids: list[int]) -> tuple[int, LayerKV | None]:
        """(n, kv of token_ids[:n]) for the longest cached prefix, with n < len(token_ids) so at
        least one token is left to run through the model; (0, None) on a miss."""
        self.lookups += 1
        best_len, best_key = 0, None
        limit = len(token_ids) - 1
        for key, (key_list, _) in self._entries.items():
            n = min(common_prefix_length(key_list, token_ids), limit)
            if n > best_len:
                best_len, best_key = n, key
        if best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits_tokens += best_len
        return best_len, slice_kv(self._entries[best_key][1], best_len)

    def insert(self, token_ids: list[int], kv: LayerKV) -> None:
        """Remember the KV of `token_ids` (kv must cover exactly those positions)."""
        if self.max_tokens <= 0 or not token_ids or len(token_ids) > self.max_tokens:
            return
        assert kv[0][0].shape[2] == len(token_ids), "KV length must match the key"
        key = tuple(token_ids)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = (list(key), kv)
        self._num_tokens += len(key)
        while self._num_tokens > self.max_tokens:
            old, _ = self._entries.popitem(last=False)
            self._num_tokens -= len(old)

    def clear(self) -> None:
        """Drop everything (after a weight update or on /flush_cache)."""
        self._entries.clear()
        self._num_tokens = 0
