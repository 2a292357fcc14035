"""`stages.score` calls every registered reward the way the loop does, on records `data prepare` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rest_megatron.algo.rewards import reward_names
from rest_megatron.data.prompts import load_prompts
from rest_megatron.rollout.trajectory import Trajectory
from rest_megatron.trainer.stages import score

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
REFERENCE = (
    "<think>weather</think>\n"
    '<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n</tool_call>'
)
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _prepared(tmp_path: Path) -> Path:
    """One record shaped like `rest-megatron data prepare --format toolrl` output."""
    record = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [TOOL],
        "ground_truth": {
            "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
            "ordered": True,
            "answer": "sunny",
            "reference": REFERENCE,
        },
    }
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


def _trajectory(*turns: str) -> Trajectory:
    return Trajectory(sample_id="t", messages=[{"role": "assistant", "content": t} for t in turns])


@pytest.mark.parametrize("reward", reward_names())
def test_every_reward_scores_a_prepared_record_good_above_bad(reward: str, tmp_path: Path) -> None:
    prompts = load_prompts(str(_prepared(tmp_path)), "train", 0)
    good = _trajectory("<think>weather</think>\n" + CALL, "<response>sunny</response>")
    bad = _trajectory("no idea")
    rewards, parts = score([good, bad], prompts, reward=reward, step=0, params={})
    assert rewards.shape == (2,) and parts
    assert rewards[0] > rewards[1], (reward, rewards)


def test_toolrl_names_the_fix_for_a_record_without_its_reference(tmp_path: Path) -> None:
    path = tmp_path / "calls_only.jsonl"
    path.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "ground_truth": {"calls": []}}
        )
        + "\n"
    )
    with pytest.raises(ValueError, match="data prepare --format toolrl"):
        score([_trajectory("hi")], load_prompts(str(path), "train", 0), reward="toolrl", step=0, params={})
