"""Test payload for preemption: gloo ranks count steps, checkpoint the count on SIGTERM, resume from it.

Started by torchrun exactly like the trainer (`counter.py RECIPE key=value ...`); it reads
`logging.run_dir=...` from its arguments, so the test also proves that train.sbatch inserts the run
directory and keeps it across a requeue. Knobs: COUNTER_STEPS (default 40), COUNTER_STEP_S (0.25),
COUNTER_HOLD (a file path: while that file exists the count goes on past COUNTER_STEPS, so an attempt
cannot finish before the signal meant for it arrives, however slow its delivery; the test removes
the file when it wants the run to end).

It saves ONLY on SIGTERM, never periodically, so a second attempt that starts at step s > 0 proves
the whole path: Slurm's signal, the job script forwarding it, the checkpoint, the requeue, the same
run directory, the resume. Every step all-reduces a stop flag, so all ranks stop at the same step.
Rank 0 appends events (`start`, `sigterm`, `done`) to RUN_DIR/events.jsonl and the current step to
RUN_DIR/progress.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

STOP = torch.zeros(1)


def on_term(signum: int, frame: object) -> None:
    """Ask every rank to stop at the next step boundary (repeated signals are harmless)."""
    STOP.fill_(1.0)


def overrides(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments after the recipe path."""
    return dict(arg.split("=", 1) for arg in argv[1:] if "=" in arg)


def main() -> int:
    signal.signal(signal.SIGTERM, on_term)
    run_dir = Path(overrides(sys.argv)["logging.run_dir"])
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    checkpoint = run_dir / "counter.json"
    step = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else 0
    total, step_s = (
        int(os.environ.get("COUNTER_STEPS", "40")),
        float(os.environ.get("COUNTER_STEP_S", "0.25")),
    )
    hold = Path(os.environ["COUNTER_HOLD"]) if os.environ.get("COUNTER_HOLD") else None

    def event(name: str, **fields: object) -> None:
        if rank == 0:
            with open(run_dir / "events.jsonl", "a") as f:
                f.write(json.dumps({"event": name, **fields}) + "\n")
            print(f"[counter] {name} {fields}", flush=True)

    event("start", restart=int(os.environ.get("SLURM_RESTART_COUNT", "0")), from_step=step, world=world)
    while True:
        # Ranks agree on the hold too: one rank seeing the file vanish a step early must not end alone.
        flags = torch.stack(
            [STOP[0], torch.tensor(1.0), torch.tensor(float(hold is not None and hold.exists()))]
        )
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        assert int(flags[1]) == world
        if flags[0] > 0:
            if rank == 0:
                tmp = checkpoint.with_suffix(".tmp")
                tmp.write_text(json.dumps({"step": step}))
                os.replace(tmp, checkpoint)
            event("sigterm", step=step)
            dist.barrier()
            dist.destroy_process_group()
            return 143
        if step >= total and flags[2] == 0:
            break
        step += 1
        if rank == 0:
            (run_dir / "progress").write_text(str(step))
        time.sleep(step_s)
    event("done", step=step)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
