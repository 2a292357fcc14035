"""Trajectory bookkeeping: one append method keeps tokens, logprobs, mask and regions aligned."""

from __future__ import annotations

import json

import pytest

from rest_megatron.rollout.trajectory import (
    OTHER,
    ToolCallRecord,
    Trajectory,
    TrajectoryStatus,
    load_jsonl,
    save_jsonl,
)


def _sample() -> Trajectory:
    t = Trajectory(sample_id="3/1")
    t.append("prompt", [5, 6, 7], turn=-1)
    t.append("assistant", [8, 9], logprobs=[-0.5, -0.25], region_masks=[1, 2], turn=0)
    t.append("tool", [10, 11, 12], turn=0)
    t.append("assistant", [13], logprobs=[-1.0], region_masks=[16], turn=1)
    t.tool_calls.append(ToolCallRecord(0, "calculator", {"expression": "1+1"}, True, "2", duration_s=0.1))
    t.finish(TrajectoryStatus.ANSWERED, "answer")
    return t


def test_tokens_are_the_concatenation_and_the_mask_covers_exactly_the_sampled_tokens() -> None:
    t = _sample()
    assert t.token_ids == [5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert t.loss_mask == [0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert t.logprobs == [0, 0, 0, -0.5, -0.25, 0, 0, 0, -1.0]
    assert t.region_masks == [OTHER] * 3 + [1, 2] + [OTHER] * 3 + [16]
    assert (t.prompt_length, t.response_length, t.num_turns, t.num_sampled) == (3, 6, 2, 3)
    assert [(s.kind, s.start, s.end, s.turn) for s in t.segments] == [
        ("prompt", 0, 3, -1),
        ("assistant", 3, 5, 0),
        ("tool", 5, 8, 0),
        ("assistant", 8, 9, 1),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"logprobs": [-1.0], "region_masks": [1, 1]},  # one logprob short
        {"logprobs": [-1.0, -1.0], "region_masks": [1]},  # one region short
        {"logprobs": None, "region_masks": [1, 1]},  # sampled tokens without logprobs
    ],
)
def test_misaligned_assistant_append_is_refused(bad: dict) -> None:
    t = Trajectory(sample_id="x")
    t.append("prompt", [1], turn=-1)
    with pytest.raises(AssertionError):
        t.append("assistant", [2, 3], turn=0, **bad)
    assert t.token_ids == [1] and len(t.logprobs) == 1  # nothing half-appended


def test_tool_tokens_cannot_carry_logprobs_and_the_prompt_comes_once() -> None:
    t = Trajectory(sample_id="x")
    t.append("prompt", [1], turn=-1)
    with pytest.raises(AssertionError):
        t.append("tool", [2], logprobs=[-1.0], turn=0)
    with pytest.raises(AssertionError):
        t.append("prompt", [2], turn=-1)


def test_finished_trajectories_do_not_grow() -> None:
    t = _sample()
    with pytest.raises(AssertionError):
        t.append("tool", [1], turn=2)


def test_jsonl_round_trip(tmp_path) -> None:
    original = [_sample(), Trajectory(sample_id="empty")]
    path = tmp_path / "rollout.jsonl"
    save_jsonl(original, path)
    loaded = load_jsonl(path)
    assert [t.to_dict() for t in loaded] == [t.to_dict() for t in original]
    assert loaded[0].status is TrajectoryStatus.ANSWERED and loaded[0].tool_calls[0].name == "calculator"


def test_a_corrupted_replay_file_names_the_line(tmp_path) -> None:
    record = _sample().to_dict()
    record["loss_mask"] = record["loss_mask"][:-1]  # drifted lists
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_sample().to_dict()) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_jsonl(path)
