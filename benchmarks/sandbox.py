"""Sandbox service throughput and latency against bare `python -c` subprocesses, in the same run.

    python benchmarks/sandbox.py [--calls 1000] [--concurrency 1,16,64] [--backend auto]

For each concurrency level it runs `--calls` short Python programs (`print(i)`) twice: as bare
`python -c` subprocesses started by this process (the baseline), and through a real sandbox
service on a loopback port (`POST /run_code`: HTTP, admission queue, a fresh sandbox with its own
namespaces, uid and scratch directory per call). Then it measures warm stateful-session calls.
It prints calls/s, p50 and p99 per row, the p50 ratio to the baseline, and failures.

Goals: p50 <= 1.5x the bare subprocess at each concurrency, zero failures, and a warm session call
p50 <= 20 ms. All traffic goes to 127.0.0.1 and the script stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools_sandbox.client import SandboxClient, local_sandbox_server  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def _drive(calls: int, concurrency: int, one) -> tuple[list[float], int, float]:  # noqa: ANN001
    """Run `one(i)` `calls` times with at most `concurrency` in flight; (latencies, failures, wall)."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures = 0

    async def timed(i: int) -> None:
        nonlocal failures
        async with semaphore:
            start = time.perf_counter()
            try:
                ok = await one(i)
            except Exception:  # noqa: BLE001 - a benchmark counts failures, it does not stop on them
                ok = False
            latencies.append(time.perf_counter() - start)
            failures += int(not ok)

    start = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(calls)))
    return latencies, failures, time.perf_counter() - start


async def _bare(i: int) -> bool:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"print({i})", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return proc.returncode == 0 and out == f"{i}\n".encode()


def _row(
    label: str,
    concurrency: int,
    latencies: list[float],
    failures: int,
    wall: float,
    baseline_p50: float | None,
) -> tuple[str, float]:
    p50 = _percentile(latencies, 0.5) * 1000
    p99 = _percentile(latencies, 0.99) * 1000
    ratio = f"{p50 / baseline_p50:.2f}x" if baseline_p50 else "1.00x"
    line = (
        f"| {label:<22} | {concurrency:>5} | {len(latencies):>5} | "
        f"{len(latencies) / wall:>8.1f} | {p50:>8.1f} | "
        f"{p99:>8.1f} | {ratio:>6} | {failures:>4} |"
    )
    return line, p50


async def main_async(args: argparse.Namespace) -> int:
    levels = [int(c) for c in args.concurrency.split(",")]
    server_args = [
        "--backend",
        args.backend,
        "--no-bfcl",
        "--max-concurrency",
        str(args.max_concurrency),
        "--queue-size",
        "4096",
        "--warm-workers",
        "2",
    ]
    print(
        f"# sandbox benchmark: {args.calls} calls per row, {os.cpu_count()} CPUs, "
        f"server {' '.join(server_args)}"
    )
    print("| mode                   | conc. | calls |  calls/s |  p50 ms  |  p99 ms  | p50 vs | fail |")
    print("|------------------------|-------|-------|----------|----------|----------|--------|------|")
    all_ok = True
    with local_sandbox_server(server_args) as server:
        async with SandboxClient(server.base_url, timeout_s=600, max_retries=10) as client:
            backend = (await client.health())["backend"]

            async def sandboxed(i: int) -> bool:
                reply = await client.run_code(f"print({i})")
                return reply["status"] == "Success" and reply["run_result"]["stdout"] == f"{i}\n"

            for level in levels:
                await _drive(min(20, args.calls), level, _bare)  # warm the page cache for both sides
                await _drive(min(20, args.calls), level, sandboxed)
                lat, fail, wall = await _drive(args.calls, level, _bare)
                line, base_p50 = _row("bare python -c", level, lat, fail, wall, None)
                print(line, flush=True)
                lat, fail, wall = await _drive(args.calls, level, sandboxed)
                line, p50 = _row(f"sandbox /run_code ({backend})", level, lat, fail, wall, base_p50)
                print(line, flush=True)
                all_ok &= fail == 0 and p50 <= 1.5 * base_p50

            session = await client.create_session(["python"])
            await client.call_tool("python", {"code": "state = 0"}, session_id=session)

            async def warm(i: int) -> bool:
                result = await client.call_tool("python", {"code": f"state += 1\n{i}"}, session_id=session)
                return result.ok and result.output == f"{i}\n"

            lat, fail, wall = await _drive(args.session_calls, 1, warm)
            line, p50 = _row("warm session call", 1, lat, fail, wall, None)
            print(line.replace("1.00x", "   -  "), flush=True)
            await client.close_session(session)
            all_ok &= fail == 0 and p50 <= 20.0
            metrics = await client.metrics()
    print(
        f"# server-side: {metrics['calls']} calls, {metrics['failures']} failures, "
        f"{metrics['sandbox_errors']} sandbox errors, {metrics['rejected']} rejected"
    )
    print(
        f"# goals (p50 <= 1.5x bare, 0 failures, warm session p50 <= 20 ms): {'MET' if all_ok else 'NOT MET'}"
    )
    return 0 if all_ok else 1


def main() -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per row (default 1000)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels (default 1,16,64)")
    parser.add_argument("--session-calls", type=int, default=500, help="warm session calls (default 500)")
    parser.add_argument("--backend", default="auto", help="sandbox backend (default auto)")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=os.cpu_count() or 1,
        help="server's concurrent executions (default: CPU count)",
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
