"""Test payload for failures: every rank joins gloo, then rank FAIL_RANK (default 1) raises.

The other ranks then sit in a 10-minute sleep, standing in for a collective that will never
complete, so only the job script's kill-on-bad-exit ends them: the test checks that the job fails
promptly with a non-zero exit and that the log names the failed rank.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

import torch.distributed as dist


def main() -> int:
    dist.init_process_group("gloo", timeout=timedelta(seconds=300))
    rank = dist.get_rank()
    dist.barrier()
    if rank == int(os.environ.get("FAIL_RANK", "1")):
        raise RuntimeError(f"rank {rank} fails on purpose")
    time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
