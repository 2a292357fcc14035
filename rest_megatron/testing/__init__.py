"""Helpers for the tests and benchmarks (`GlooPool` also runs the converter's ranks).

gloo.py         GlooPool: a function on N real gloo ranks, the ranks reused across calls
tiny_caller.py  a tiny model fine-tuned to call tools (rollout tests and benchmarks)
memory.py       peak allocated bytes of a call (torch.profiler allocation events)
"""
