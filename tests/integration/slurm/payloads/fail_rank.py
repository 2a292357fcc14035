"""Test payload for failures: every rank joins gloo, then rank FAIL_RANK (default 1) raises.

The other ranks wait in a collective that can never complete, so only the job script's
kill-on-bad-exit (or the collective timeout, much later) ends them: the test checks that the job
fails promptly with a non-zero exit and that the log names the failed rank.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def main() -> int:
    dist.init_process_group("gloo", timeout=timedelta(seconds=300))
    rank = dist.get_rank()
    dist.barrier()
    if rank == int(os.environ.get("FAIL_RANK", "1")):
        raise RuntimeError(f"rank {rank} fails on purpose")
    dist.all_reduce(torch.ones(1))  # never completes: the failed rank will not join
    return 0


if __name__ == "__main__":
    sys.exit(main())
