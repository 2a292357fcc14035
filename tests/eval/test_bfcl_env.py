"""multi_turn_base: BFCL's ground-truth calls, sent as model output, pass the state and response checks.

Each turn's ground truth is rendered as `<tool_call>` blocks, parsed, executed on the model's copy of
the environment (keyword arguments, as a model sends them), and checked against the ground truth run
on a second copy (BFCL's positional strings): the path `BfclRunner.multi_turn` takes after generation.
"""

from __future__ import annotations

import importlib.util
import json
import time
from typing import Any

import pytest

from rest_megatron.eval.bfcl_checker import multi_turn_decode
from rest_megatron.eval.bfcl_data import load_category
from rest_megatron.eval.bfcl_env import MultiTurnEpisode, keyword_call, parse_call_string, run_call
from tests.eval.conftest import needs_bfcl

pytestmark = [
    needs_bfcl,
    pytest.mark.skipif(
        importlib.util.find_spec("mpmath") is None,
        reason="BFCL's MathAPI needs mpmath (`pip install mpmath`)",
    ),
]


@pytest.fixture(scope="module")
def entries() -> list[Any]:
    return load_category("multi_turn_base")


MULTI_TURN_CATEGORIES = [
    "multi_turn_base",
    "multi_turn_miss_func",
    "multi_turn_miss_param",
    "multi_turn_long_context",
]


def as_text(calls: list[dict[str, Any]]) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in calls)


def play(entry: Any, edit: Any = None) -> str | None:
    """Run the ground truth as model output, `edit(turn, calls)` changing it first; the first failing
    turn's reason."""
    episode = MultiTurnEpisode(entry)
    for turn in range(len(entry.turns)):
        calls = episode.truth_calls(turn)
        if edit is not None:
            calls = edit(turn, calls)
        decoded = multi_turn_decode(as_text(calls), "fc")
        assert len(decoded) == len(calls)
        if decoded:
            episode.execute(decoded)
        if (reason := episode.end_turn(turn)) is not None:
            return reason
    return None


@pytest.mark.parametrize("category", MULTI_TURN_CATEGORIES)
def test_ground_truth_passes_every_entry(category: str) -> None:
    entries = load_category(category)
    assert len(entries) >= 200
    failures = {entry.id: reason for entry in entries if (reason := play(entry)) is not None}
    assert not failures


def test_a_dropped_call_fails_every_entry(entries: list[Any]) -> None:
    first_turn = [e for e in entries if e.answer[0]]
    passed = [
        e.id for e in first_turn if play(e, lambda turn, calls: calls[:-1] if turn == 0 else calls) is None
    ]
    assert not passed, passed


def test_wrong_arguments_and_silent_turns_fail(entries: list[Any]) -> None:
    entry = entries[0]  # turn 0: cd(folder='document'), mkdir(dir_name='temp'), mv(...)

    def rename(turn: int, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(c, arguments={"dir_name": "tmp"}) if c["name"] == "mkdir" else c for c in calls]

    reason = play(entry, rename)
    assert reason is not None and reason.startswith(
        "turn 0: multi_turn:instance_state_mismatch: Model instance for GorillaFileSystem"
    )
    assert play(entry, lambda turn, calls: [] if turn == 1 else calls).startswith("turn 1: no tool call")
    assert "multi_turn:execution_response_mismatch" in play(
        entries[1],
        lambda turn, calls: [c for c in calls if c["name"] not in ("ls", "cat", "grep", "tail")] or calls,
    )
    # The same calls in separate steps, with results read in between, are as good as one step.
    episode = MultiTurnEpisode(entry)
    for call in episode.truth_calls(0):
        episode.execute([call])
    assert episode.end_turn(0) is None


def test_ground_truth_call_strings() -> None:
    assert parse_call_string("mv(source='a.txt', destination='b')") == (
        "mv",
        [],
        {"source": "a.txt", "destination": "b"},
    )
    assert parse_call_string("sort('final_report.pdf')") == ("sort", ["final_report.pdf"], {})
    with pytest.raises(ValueError, match="not a call"):
        parse_call_string("os.system('ls')")

    class Files:
        def sort(self, file_name: str) -> str:
            return file_name

    assert keyword_call("sort('r.pdf')", {"sort": Files().sort}) == {
        "name": "sort",
        "arguments": {"file_name": "r.pdf"},
    }


def test_calls_fail_as_text_never_raise() -> None:
    def slow() -> str:
        time.sleep(5)
        return "done"

    methods = {"slow": slow, "add": lambda a, b: {"result": a + b}}
    assert run_call(methods, "add", {"a": 1, "b": 2}, 1.0) == '{"result": 3}'
    assert run_call(methods, "add", {"a": 1}, 1.0).startswith("Error during execution:")
    assert "unknown function 'rm'" in run_call(methods, "rm", {}, 1.0)
    started = time.monotonic()
    assert "longer than 0.2 s" in run_call(methods, "slow", {}, 0.2)
    assert time.monotonic() - started < 2
