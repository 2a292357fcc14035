"""Peak tensor memory of a callable, measured from the allocator, for the ops tests and benchmarks.

CPU: torch has no CPU counterpart of `torch.cuda.max_memory_allocated`, so we run the callable under
`torch.profiler` with `profile_memory=True`. Every allocation and free made through torch's CPU
allocator (every tensor storage) is recorded with a running total of allocated bytes
(`extra_fields.total_allocated`; the profiler's memory reporter keeps it across profiled regions, so
we subtract its level just before the first event). The maximum is the peak number of bytes the
callable had allocated on top of what existed before: inputs made outside count zero, outputs and
every temporary count in full. Unlike RSS it is exact to the byte, is not blurred by the allocator
keeping freed pages, and is per process, so each gloo rank measures itself. Memory that bypasses
torch's allocator (gloo's internal buffers, Python objects) is not counted.

CUDA: the caching allocator's `max_memory_allocated`, reset before the call, minus the level at start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def peak_allocated_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[int, Any]:
    """Run `fn()` and return (peak bytes allocated above the level at the start, fn's result)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start, result

    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = []  # (time, bytes allocated (+) or freed (-), running total after it)
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            fields = node.extra_fields
            events.append((node.start_time_ns, fields.alloc_size, fields.total_allocated))
        stack.extend(node.children)
    if not events:
        return 0, result
    events.sort()
    # The running total carries over from earlier profiled regions in this process, so measure
    # from the level just before the first event.
    base = events[0][2] - events[0][1]
    return max(0, max(total for _, _, total in events) - base), result
