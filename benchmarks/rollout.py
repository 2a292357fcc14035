"""Multi-turn rollout overlap: N trajectories concurrently versus one after another, in the same run.

    OMP_NUM_THREADS=1 python benchmarks/rollout.py [--trajectories 16] [--tool-latency 0.5] [--repeats 2]

One embedded CPU engine (a real server process) serves the fine-tuned tiny tool caller
(`rest_megatron.testing.tiny_caller`; trained and cached on first use, about a minute). Each
trajectory is a tiny-task question: the model calls the calculator one or more times, reads the
results and answers. Every tool call takes a fixed `--tool-latency` (an in-process executor that
sleeps, then evaluates the expression with the sandbox's calculator), so the measurement is about
the rollout, not the sandbox. Decoding is greedy, so both runs produce the same trajectories.

- sequential: `AgentLoop.run` on one trajectory at a time;
- concurrent: `AgentLoop.run_batch` on all of them (no barrier between turns; the engine batches);
- ideal overlap: the longest single trajectory of the sequential run: what concurrency could reach
  if generation and tools of different trajectories overlapped perfectly at no cost.

It prints both times, the speedup, and ideal / concurrent (goal >= 0.8). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transformers  # noqa: E402

from rest_megatron.data.tiny_task import make_tiny_task  # noqa: E402
from rest_megatron.rollout.agent_loop import AgentLoop, AgentSettings, RolloutPrompt  # noqa: E402
from rest_megatron.rollout.clients import SGLangClient  # noqa: E402
from rest_megatron.rollout.launch import start_embedded_servers  # noqa: E402
from rest_megatron.rollout.types import SamplingParams  # noqa: E402
from rest_megatron.testing.tiny_caller import prompt_messages, tiny_tool_caller_dir  # noqa: E402
from tools_sandbox.tools.calculator import call as calculator  # noqa: E402


@dataclass(frozen=True)
class Result:
    ok: bool
    output: str
    error: str | None
    timed_out: bool = False
    duration_s: float = 0.0

    def render(self) -> str:
        return self.output if self.ok else f"Error: {self.error}"


class FixedLatencyTools:
    """Every call takes `latency_s`, then the calculator answers (other tools are errors)."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def call_tool(
        self, name: str, arguments: dict, session_id: str | None = None, timeout_s: float | None = None
    ) -> Result:
        await asyncio.sleep(self.latency_s)
        if name != "calculator":
            return Result(False, "", f"unknown tool {name}", duration_s=self.latency_s)
        ok, output, error = calculator(arguments)
        return Result(ok, output, error, duration_s=self.latency_s)


async def _measure(url: str, tokenizer, prompts: list[RolloutPrompt], latency_s: float):  # noqa: ANN001
    client = SGLangClient(url, timeout_s=600)
    settings = AgentSettings(sampling=SamplingParams(temperature=0.0, max_new_tokens=64), max_turns=6)
    loop = AgentLoop(client, tokenizer, FixedLatencyTools(latency_s), settings)
    await loop.run_batch(prompts[:2])  # warm-up: imports, first requests, prefix cache of the system prompt
    started = time.perf_counter()
    sequential = [await loop.run(p) for p in prompts]
    sequential_s = time.perf_counter() - started
    started = time.perf_counter()
    concurrent = await loop.run_batch(prompts)
    concurrent_s = time.perf_counter() - started
    await client.aclose()
    return sequential, sequential_s, concurrent, concurrent_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument("--tool-latency", type=float, default=0.5, help="seconds every tool call takes")
    parser.add_argument(
        "--repeats", type=int, default=2, help="measure this many times; report each and the median"
    )
    args = parser.parse_args()

    model_dir = tiny_tool_caller_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    prompts = []
    for i, sample in enumerate(make_tiny_task(2024, args.trajectories, "eval", kinds=("arithmetic",))):
        messages, tools = prompt_messages(sample)
        prompts.append(RolloutPrompt(f"bench-{i}", messages, tools))
    with tempfile.TemporaryDirectory() as logs:
        server = start_embedded_servers(model_dir, 1, log_dir=logs, extra={"num_threads": 1}, timeout_s=300)[
            0
        ]
        try:
            runs = [
                asyncio.run(_measure(server.base_url, tokenizer, prompts, args.tool_latency))
                for _ in range(args.repeats)
            ]
        finally:
            server.stop()

    print(
        f"rollout overlap: {args.trajectories} trajectories, tool latency {args.tool_latency:.2f} s, "
        "embedded CPU engine (tiny tool caller, greedy), 1 torch thread"
    )
    ratios = []
    for index, (sequential, sequential_s, concurrent, concurrent_s) in enumerate(runs):
        turns = [t.num_turns for t in sequential]
        calls = sum(len(t.tool_calls) for t in sequential)
        same = [t.token_ids for t in sequential] == [t.token_ids for t in concurrent]
        ideal_s = max(t.metadata["duration_s"] for t in sequential)
        tool_s = max(sum(r.duration_s for r in t.tool_calls) for t in sequential)
        ratio = ideal_s / concurrent_s
        ratios.append(ratio)
        print(
            f"run {index + 1}: turns/trajectory mean {statistics.mean(turns):.2f} "
            f"(min {min(turns)}, max {max(turns)}), "
            f"{calls} tool calls, same trajectories in both modes: {same}"
        )
        print(f"  one after another   {sequential_s:7.2f} s")
        print(f"  concurrent          {concurrent_s:7.2f} s   speedup {sequential_s / concurrent_s:5.2f}x")
        print(
            f"  ideal overlap       {ideal_s:7.2f} s   "
            f"(longest single trajectory; {tool_s:.2f} s of it in tools)"
        )
        print(f"  ideal / concurrent  {ratio:7.2f}     (goal >= 0.8)")
    print(f"median ideal / concurrent over {len(ratios)} run(s): {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
