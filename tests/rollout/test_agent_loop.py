"""The agent loop end to end: the fine-tuned tiny tool caller on a real engine, tools in the real sandbox."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from rest_megatron.algo.regions import Region, region_bit
from rest_megatron.data.tiny_task import make_tiny_task
from rest_megatron.rollout.agent_loop import AgentLoop, AgentSettings, RolloutPrompt
from rest_megatron.rollout.clients import Router, SGLangClient
from rest_megatron.rollout.launch import free_port
from rest_megatron.rollout.trajectory import TrajectoryStatus, load_jsonl, save_jsonl
from rest_megatron.rollout.types import SamplingParams
from rest_megatron.testing.tiny_caller import SLOW_SECONDS, prompt_messages
from tests.rollout.conftest import run

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=64)


def _prompts(n: int, mode: str = "normal", seed: int = 11) -> list[RolloutPrompt]:
    out = []
    for i, sample in enumerate(make_tiny_task(seed, n, "eval", kinds=("arithmetic",))):
        messages, tools = prompt_messages(sample, mode)
        out.append(RolloutPrompt(f"{mode}-{i}", messages, tools, {"answer": sample.answer}))
    return out


async def _rollout(client, tokenizer, sandbox_url: str, prompts: list[RolloutPrompt], **settings):
    from tools_sandbox.client import SandboxClient

    async with SandboxClient(sandbox_url, timeout_s=60) as sandbox:
        loop = AgentLoop(client, tokenizer, sandbox, AgentSettings(**{"sampling": GREEDY, **settings}))
        try:
            return await loop.run_batch(prompts)
        finally:
            await client.aclose()


def _check_bookkeeping(trajectory, model) -> None:
    """Tokens = prompt + segments; mask 1 exactly on sampled tokens; logprobs are the model's at those
    positions."""
    trajectory.check()
    ids = trajectory.token_ids
    for segment in trajectory.segments:
        mask = trajectory.loss_mask[segment.start : segment.end]
        assert mask == [int(segment.kind == "assistant")] * (segment.end - segment.start)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:])[:, None])[
        :, 0
    ]  # of token t+1
    sampled = torch.tensor(trajectory.loss_mask[1:], dtype=torch.bool)
    assert torch.allclose(logprobs[sampled], torch.tensor(trajectory.logprobs[1:])[sampled], atol=1e-4)
    assert all(lp == 0.0 for lp, m in zip(trajectory.logprobs, trajectory.loss_mask) if not m)


def test_multi_turn_rollout_with_real_tools(
    engine, sandbox_url, caller_tokenizer, caller_model, tmp_path
) -> None:
    prompts = _prompts(4)
    trajectories = run(
        _rollout(SGLangClient(engine.base_url), caller_tokenizer, sandbox_url, prompts, max_turns=4)
    )
    for trajectory in trajectories:
        assert trajectory.status in (TrajectoryStatus.ANSWERED, TrajectoryStatus.MAX_TURNS), (
            trajectory.finish_reason
        )
        assert trajectory.num_turns >= 2 and trajectory.tool_calls and not trajectory.errors
        for record in trajectory.tool_calls:  # real results of the real calculator
            assert record.name == "calculator" and record.ok
            assert record.output.strip().lstrip("-").isdigit()
        _check_bookkeeping(trajectory, caller_model)
        # The token list is the chat template's rendering of the conversation it recorded.
        text = caller_tokenizer.decode(trajectory.token_ids, skip_special_tokens=False)
        rendered = caller_tokenizer.apply_chat_template(
            trajectory.messages, tools=prompts[0].tools, tokenize=False
        )
        if trajectory.status is TrajectoryStatus.ANSWERED:
            assert text == rendered.rstrip("\n")
        name_bit = region_bit(Region.TOOL_NAME)
        first = trajectory.segments[1]
        name_tokens = [
            t
            for t, r in zip(
                trajectory.token_ids[first.start : first.end],
                trajectory.region_masks[first.start : first.end],
            )
            if r & name_bit
        ]
        assert caller_tokenizer.decode(name_tokens).strip() == "calculator"
    save_jsonl(trajectories, tmp_path / "rollout.jsonl")
    assert [t.to_dict() for t in load_jsonl(tmp_path / "rollout.jsonl")] == [
        t.to_dict() for t in trajectories
    ]


def test_malformed_calls_become_error_messages(engine, sandbox_url, caller_tokenizer) -> None:
    trajectory = run(
        _rollout(SGLangClient(engine.base_url), caller_tokenizer, sandbox_url, _prompts(1, "broken"))
    )[0]
    record = trajectory.tool_calls[0]
    assert record.name is None and not record.ok and "not valid JSON" in record.output
    tool = next(s for s in trajectory.segments if s.kind == "tool")
    assert "not valid JSON" in caller_tokenizer.decode(trajectory.token_ids[tool.start : tool.end])
    assert trajectory.status is not TrajectoryStatus.FAILED


def test_a_tool_that_times_out_is_reported_to_the_model(engine, sandbox_url, caller_tokenizer) -> None:
    trajectory = run(
        _rollout(
            SGLangClient(engine.base_url),
            caller_tokenizer,
            sandbox_url,
            _prompts(1, "slow"),
            tool_timeout_s=0.5,
        )
    )[0]
    record = trajectory.tool_calls[0]
    assert record.name == "python" and record.timed_out and not record.ok
    assert "timeout" in record.output and trajectory.messages[3]["content"] == record.output
    assert trajectory.status is not TrajectoryStatus.FAILED


def test_one_slow_trajectory_does_not_delay_the_others(engine, sandbox_url, caller_tokenizer) -> None:
    prompts = _prompts(1, "slow") + _prompts(4, "normal", seed=12)
    trajectories = run(
        _rollout(SGLangClient(engine.base_url), caller_tokenizer, sandbox_url, prompts, tool_timeout_s=30)
    )
    slow, fast = trajectories[0], trajectories[1:]
    assert slow.tool_calls[0].ok and slow.tool_calls[0].duration_s >= SLOW_SECONDS
    # While the slow tool runs, the others keep generating (a barrier between turns would hold
    # every later turn until the slow tool returned): their later turns start inside its window.
    tools_end = slow.metadata["started_at"] + slow.metadata["timeline"][0]["tools"][1]
    for trajectory in fast:
        later_turns = [
            trajectory.metadata["started_at"] + t["generate"][0] for t in trajectory.metadata["timeline"][1:]
        ]
        assert later_turns and all(start < tools_end for start in later_turns)
        assert trajectory.metadata["finished_at"] < slow.metadata["finished_at"]


def test_limits_end_trajectories(engine, sandbox_url, caller_tokenizer) -> None:
    one_turn = run(
        _rollout(SGLangClient(engine.base_url), caller_tokenizer, sandbox_url, _prompts(1), max_turns=1)
    )[0]
    assert (
        one_turn.status is TrajectoryStatus.MAX_TURNS and one_turn.num_turns == 1 and not one_turn.tool_calls
    )
    short = run(
        _rollout(
            SGLangClient(engine.base_url), caller_tokenizer, sandbox_url, _prompts(1), max_total_tokens=8
        )
    )[0]
    assert short.status is TrajectoryStatus.TRUNCATED and short.response_length == 8


def test_the_batch_completes_when_a_server_is_killed_mid_rollout(
    engine, spare_engine, sandbox_url, caller_tokenizer, caller_model
) -> None:
    clients = [
        SGLangClient(url, max_retries=1, backoff_s=0.05) for url in (engine.base_url, spare_engine.base_url)
    ]
    router = Router(clients, probe_interval_s=0.5)
    killed = threading.Event()

    async def kill_when_busy() -> None:
        while router.outstanding[spare_engine.base_url] == 0:
            await asyncio.sleep(0.005)
        await asyncio.to_thread(spare_engine.kill)
        killed.set()

    async def go():
        killer = asyncio.ensure_future(kill_when_busy())
        sampled = SamplingParams(temperature=1.0, max_new_tokens=64, seed=None)
        trajectories = await _rollout(
            router, caller_tokenizer, sandbox_url, _prompts(8, seed=13), sampling=sampled
        )
        killer.cancel()
        return trajectories

    trajectories = run(go())
    assert killed.is_set() and spare_engine.base_url in router.dead
    assert all(t.status is not TrajectoryStatus.FAILED for t in trajectories), [
        t.errors for t in trajectories
    ]
    for trajectory in trajectories:
        _check_bookkeeping(trajectory, caller_model)
    assert router.served[engine.base_url] > 0


def test_no_reachable_server_fails_the_trajectory_not_the_batch(sandbox_url, caller_tokenizer) -> None:
    router = Router(
        [SGLangClient(f"http://127.0.0.1:{free_port()}", max_retries=0)],
        probe_interval_s=0.1,
        wait_for_server_s=0.3,
    )
    started = time.monotonic()
    trajectories = run(_rollout(router, caller_tokenizer, sandbox_url, _prompts(2)))
    assert time.monotonic() - started < 10
    assert [t.status for t in trajectories] == [TrajectoryStatus.FAILED] * 2
    assert "no inference server is healthy" in trajectories[0].errors[0]


@pytest.mark.parametrize("bad", [{"max_turns": 0}, {"tool_timeout_s": 0}])
def test_settings_are_validated(bad) -> None:
    with pytest.raises(ValueError):
        AgentSettings(sampling=GREEDY, **bad)


def test_stateful_tools_run_in_a_session_and_a_failed_session_fails_only_its_trajectory(
    engine, sandbox_url, caller_tokenizer
) -> None:
    good = _prompts(1)[0]
    bad_tools = [*good.tools, {"type": "function", "function": {"name": "no_such_tool", "parameters": {}}}]
    bad = RolloutPrompt("bad", good.messages, bad_tools)
    ok, failed = run(
        _rollout(
            SGLangClient(engine.base_url), caller_tokenizer, sandbox_url, [good, bad], stateful_tools=True
        )
    )
    assert ok.status is TrajectoryStatus.ANSWERED and ok.tool_calls and all(r.ok for r in ok.tool_calls)
    assert failed.status is TrajectoryStatus.FAILED and "no_such_tool" in failed.errors[0]
