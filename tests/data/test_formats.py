"""Every format converts its hand-written fixture: good records out, each bad one reported by line and reason.

The fixtures in fixtures/ are small files written in each published format, with one broken record per
kind of breakage (invalid JSON, a missing field, a call to an undeclared tool, unparseable arguments, and
a few format-specific ones). The tests pin which lines are rejected and why, check what the good records
became, and load the output through the trainer's own loader (`data/prompts.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rest_megatron.algo.function_match import calls_match
from rest_megatron.data.formats import ConvertOptions, format_names, get_format
from rest_megatron.data.formats.base import Converted, Rejected
from rest_megatron.data.formats.prepare import DATA_FILE, REJECTED_FILE, SUMMARY_FILE, prepare
from rest_megatron.data.formats.validate import validate_record
from rest_megatron.data.prompts import load_prompts

FIXTURES = Path(__file__).parent / "fixtures"

# format -> (fixture, records written, {line: reason} of the rejected source records)
CASES = {
    "toolrl": (
        "toolrl.jsonl",
        2,
        {3: "invalid_json", 4: "missing_field", 6: "undeclared_tool", 7: "unparseable_arguments"},
    ),
    "xlam": (
        "xlam.jsonl",
        2,
        {
            3: "invalid_json",
            4: "missing_field",
            5: "undeclared_tool",
            6: "unparseable_arguments",
            7: "no_ground_truth",
            8: "bad_tool_schema",
            9: "undeclared_argument",
        },
    ),
    "hammer": (
        "hammer.jsonl",
        2,
        {3: "invalid_json", 4: "missing_field", 5: "undeclared_tool", 6: "unparseable_arguments"},
    ),
    "toolace": (
        "toolace.jsonl",
        4,
        {
            3: "invalid_json",
            4: "missing_field",
            5: "undeclared_tool",
            6: "unparseable_arguments",
            7: "unparseable_arguments",
        },
    ),
    "bfcl": (
        "bfcl/BFCL_v4_fixture.json",
        3,
        {
            4: "unsupported",
            5: "invalid_json",
            6: "missing_field",
            7: "undeclared_tool",
            8: "unparseable_arguments",
            9: "no_ground_truth",
        },
    ),
    "apibank": (
        "apibank.jsonl",
        4,
        {5: "invalid_json", 6: "missing_field", 7: "undeclared_tool", 8: "unparseable_arguments"},
    ),
}


def convert(fmt: str, fixture: str, **options: object) -> list[Converted | Rejected]:
    return list(get_format(fmt).converter()(FIXTURES / fixture, ConvertOptions(**options)))


def records_of(tmp_path: Path, fmt: str, fixture: str) -> list[dict]:
    prepare(fmt, FIXTURES / fixture, tmp_path)
    return [json.loads(line) for line in (tmp_path / DATA_FILE).read_text().splitlines()]


def test_every_registered_format_has_a_fixture_case() -> None:
    # A new format must come with a fixture here: this is the contract every entry passes.
    assert sorted(CASES) == format_names()


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_fixture_converts_and_reports_bad_records_by_line(fmt: str, tmp_path: Path) -> None:
    fixture, num_written, rejected = CASES[fmt]
    summary = prepare(fmt, FIXTURES / fixture, tmp_path)
    assert {r.line: r.reason for r in summary.rejections} == rejected
    assert summary.num_written == num_written
    assert all(r.detail for r in summary.rejections)
    on_disk = [json.loads(line) for line in (tmp_path / REJECTED_FILE).read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in on_disk] == sorted(rejected.items())
    counts = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert counts["records_written"] == num_written and counts["records_rejected"] == len(rejected)
    assert sum(counts["rejected_by_reason"].values()) == len(rejected)


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_output_round_trips_through_the_prompt_loader(fmt: str, tmp_path: Path) -> None:
    fixture, num_written, _ = CASES[fmt]
    records = records_of(tmp_path, fmt, fixture)
    prompts = load_prompts(str(tmp_path / DATA_FILE), "train", seed=0)
    assert len(prompts) == num_written
    for prompt, record in zip(prompts, records):
        validate_record(record)
        assert prompt.messages == record["messages"] and prompt.tools == record["tools"]
        assert prompt.ground_truth == record["ground_truth"]
        # The ground truth matches itself under the shared matcher, with the converted schemas.
        calls = prompt.ground_truth["calls"]
        assert calls_match(calls, calls, tools=prompt.tools, ordered=prompt.ground_truth["ordered"])
    assert len({r["id"] for r in records}) == len(records)


def test_toolrl_keeps_the_instruction_and_the_reference_answer(tmp_path: Path) -> None:
    first, second = records_of(tmp_path, "toolrl", "toolrl.jsonl")
    assert (
        first["messages"][0]["role"] == "system" and "**Available Tools**" in first["messages"][0]["content"]
    )
    assert first["ground_truth"]["calls"] == [
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
        {"name": "convert_currency", "arguments": {"amount": 20.0, "from": "EUR", "to": "NOK"}},
    ]
    assert "answer" not in first["ground_truth"] and first["ground_truth"]["reference"].startswith("<think>")
    assert second["ground_truth"] == {
        "calls": [],
        "ordered": False,
        "answer": "You're welcome!",
        "reference": second["ground_truth"]["reference"],
    }
    weather = first["tools"][0]["function"]["parameters"]
    assert (
        weather["required"] == [] and weather["properties"]["unit"]["type"] == "string"
    )  # defaults and ", optional"
    currency = first["tools"][1]["function"]["parameters"]  # given as a Python dict in the instruction
    assert (
        currency["required"] == ["amount", "from", "to"]
        and currency["properties"]["amount"]["type"] == "number"
    )


def test_json_arrays_report_elements_by_their_line(tmp_path: Path) -> None:
    outcomes = convert("toolrl", "toolrl_array.json")
    assert [(type(o).__name__, o.line) for o in outcomes] == [("Converted", 2), ("Converted", 4)]
    assert [o.line for o in convert("xlam", "xlam_array.json")] == [2, 8]


def test_xlam_and_hammer_differ_only_on_empty_answers(tmp_path: Path) -> None:
    hammer = records_of(tmp_path, "hammer", "hammer.jsonl")
    assert hammer[1]["ground_truth"] == {"calls": [], "ordered": False, "no_call_expected": True}
    xlam = records_of(tmp_path / "x", "xlam", "xlam.jsonl")
    assert xlam[0]["messages"] == [
        {"role": "user", "content": "Where can I find live giveaways for beta access and games?"}
    ]
    assert xlam[1]["ground_truth"]["calls"] == [{"name": "sum_list", "arguments": {"numbers": [3, 4, 5]}}]
    numbers = xlam[1]["tools"][1]["function"]["parameters"]["properties"]["numbers"]
    assert numbers == {"type": "array", "items": {"type": "integer"}, "description": "The integers."}


def test_toolace_makes_one_record_per_assistant_turn(tmp_path: Path) -> None:
    weather, answer, flights, parallel = records_of(tmp_path, "toolace", "toolace.jsonl")
    assert weather["ground_truth"]["calls"] == [
        {"name": "Get Weather", "arguments": {"city": "Rome", "days": 3}}
    ]
    assert [m["role"] for m in answer["messages"]] == ["user", "assistant", "tool"]
    assert answer["messages"][1]["tool_calls"][0]["function"]["name"] == "Get Weather"
    assert (
        answer["ground_truth"]["answer"] == "It will be sunny in Rome."
        and answer["ground_truth"]["calls"] == []
    )
    # `from` is a Python keyword and `true` a JSON spelling: both parse.
    assert flights["ground_truth"]["calls"] == [
        {"name": "flights.search", "arguments": {"from": "Oslo", "to": "Rome", "direct": True}}
    ]
    assert [m["role"] for m in flights["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert len(parallel["ground_truth"]["calls"]) == 2
    assert all(
        m["role"] != "system" for r in (weather, flights) for m in r["messages"]
    )  # ToolACE's own format prompt is dropped


def test_bfcl_canonical_calls_and_kept_alternatives(tmp_path: Path) -> None:
    simple, parallel, irrelevance = records_of(tmp_path, "bfcl", "bfcl/BFCL_v4_fixture.json")
    assert simple["id"] == "simple_python_0"
    assert simple["ground_truth"]["calls"] == [
        {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5.0, "unit": "units"}}
    ]
    params = simple["tools"][0]["function"]["parameters"]
    assert (
        params["properties"]["height"]["type"] == "number" and "optional" not in params["properties"]["unit"]
    )
    first, second = parallel["ground_truth"]["calls"]
    assert first["arguments"] == {
        "artist": "Taylor Swift",
        "duration": 20,
        "options": {"shuffle": True, "volume": 0.5},
        "queue": [],
    }
    # "extra" is not declared but BFCL accepts leaving it out, so it is left out; "" -only keys vanish.
    assert second["arguments"] == {"artist": "Maroon 5", "duration": 15, "options": {"shuffle": True}}
    assert parallel["ground_truth"]["bfcl_ground_truth"][1]["spotify.play"]["artist"] == [
        "Maroon 5",
        "Maroon Five",
    ]
    queue = parallel["tools"][0]["function"]["parameters"]["properties"]["queue"]
    assert queue == {"type": "array", "description": "Tracks.", "items": {"type": "string"}}
    assert irrelevance["ground_truth"] == {
        "calls": [],
        "ordered": False,
        "bfcl_category": "irrelevance",
        "no_call_expected": True,
    }


def test_bfcl_without_answers_rejects_what_needs_them(tmp_path: Path) -> None:
    lonely = tmp_path / "BFCL_v4_fixture.json"
    lonely.write_text((FIXTURES / "bfcl/BFCL_v4_fixture.json").read_text())
    outcomes = convert("bfcl", str(lonely))
    kept = [o for o in outcomes if isinstance(o, Converted)]
    assert len(kept) == 1 and kept[0].records[0]["id"] == "irrelevance_0"
    missing = [o for o in outcomes if isinstance(o, Rejected) and o.reason == "no_ground_truth"]
    assert [o.line for o in missing] == [1, 2, 7, 8, 9] and "--answers" in missing[0].detail
    answers = ConvertOptions(answers=FIXTURES / "bfcl/possible_answer/BFCL_v4_fixture.json")
    assert prepare("bfcl", lonely, tmp_path / "out", answers).num_written == 3


def test_apibank_shapes(tmp_path: Path) -> None:
    level1, level2, level3, response = records_of(tmp_path, "apibank", "apibank.jsonl")
    assert level1["ground_truth"]["calls"] == [{"name": "Calculator", "arguments": {"formula": "(5+6)*3"}}]
    assert level1["messages"] == [
        {"role": "user", "content": "Can you calculate (5+6)*3 for me?"},
        {"role": "assistant", "content": "Sure, let me handle that."},
    ]
    # Level 2: the API the ToolSearcher call returned in the history is offered as a tool.
    assert [t["function"]["name"] for t in level2["tools"]] == ["ToolSearcher", "QueryStock"]
    assert level2["messages"][2]["tool_calls"][0]["function"] == {
        "name": "ToolSearcher",
        "arguments": {"keywords": "Query Stock"},
    }
    assert level2["messages"][3]["role"] == "tool"
    assert level3["ground_truth"]["ordered"] is True and level3["ground_truth"]["answer"] == "2+2 is 4."
    assert [c["name"] for c in level3["ground_truth"]["calls"]] == ["ToolSearcher", "Calculator"]
    assert response["ground_truth"] == {"calls": [], "ordered": False, "answer": "The result is 33."}


def test_apibank_raw_dialog_file_is_one_dialog(tmp_path: Path) -> None:
    summary = prepare("apibank", FIXTURES / "apibank_dialog.jsonl", tmp_path)
    assert [(r.line, r.reason) for r in summary.rejections] == [(7, "invalid_json"), (9, "bad_history")]
    first, second = [json.loads(line) for line in (tmp_path / DATA_FILE).read_text().splitlines()]
    assert first["ground_truth"]["calls"] == [{"name": "Calculator", "arguments": {"formula": "(5+6)*3"}}]
    assert [m["role"] for m in second["messages"]] == [
        "user",
        "assistant",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert second["messages"][3]["content"] == "33.0"
    # Raw dialogs carry no descriptions: the schema is inferred from the calls.
    assert second["tools"][0]["function"]["parameters"] == {
        "type": "object",
        "properties": {"formula": {"type": "string", "description": ""}},
        "required": ["formula"],
    }


def test_a_dialog_with_one_bad_turn_is_rejected_whole(tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    dialog = json.loads((FIXTURES / "toolace.jsonl").read_text().splitlines()[0])
    dialog["conversations"][-1]["value"] = "[Unknown Tool(x=1)]"
    source.write_text(json.dumps(dialog) + "\n")
    summary = prepare("toolace", source, tmp_path / "out")
    assert summary.num_written == 0 and [r.reason for r in summary.rejections] == ["undeclared_tool"]
    assert summary.rejections[0].detail.startswith("output record 2 of 3: ")
