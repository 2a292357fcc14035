"""`eval apibank` and `eval toolrl`: the authors' scoring rules, and both commands end to end on the
tiny model.

The level files in `fixtures/apibank/` are small files written in the processed format the authors
evaluate on (6 entries over the three levels). The tiny random model answers nothing right, so the
end-to-end runs check the pipeline and the report; the scoring rules are checked on written replies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rest_megatron import cli
from rest_megatron.algo.curricula import evaluate
from rest_megatron.algo.rewards import TOOLRL_CORRECT_MAX, TOOLRL_FORMAT_MAX
from rest_megatron.assets import tiny_model_dir
from rest_megatron.eval import apibank, toolrl_eval
from rest_megatron.eval.bfcl_score import EntryResult
from rest_megatron.eval.single_turn import Prompt
from rest_megatron.rollout.launch import ServerProcess, start_embedded_servers

FIXTURES = Path(__file__).parent / "fixtures" / "apibank"
TOOLRL_SOURCE = Path(__file__).parents[1] / "data" / "fixtures" / "toolrl.jsonl"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    servers = start_embedded_servers(
        tiny_model_dir("tiny-qwen3"),
        1,
        log_dir=tmp_path_factory.mktemp("engine"),
        extra={"seed": 0, "num_threads": 1},
        timeout_s=180,
    )
    yield servers[0]
    servers[0].stop()


def _entry(level: int = 1, index: int = 0) -> apibank.ApiBankEntry:
    return apibank.load_level(FIXTURES, level)[index]


def test_level_files_load_with_the_authors_keys() -> None:
    entries = [e for level in (1, 2, 3) for e in apibank.load_level(FIXTURES, level)]
    assert [e.id for e in entries] == ["Level1_0", "Level1_1", "Level1_2", "Level2_0", "Level2_1", "Level3_0"]
    assert entries[2].name == "AddReminder"  # an answer given as a list: its first element
    prompt = apibank.prompt_of(entries[0])
    assert [m["role"] for m in prompt.messages] == ["system", "user"] and prompt.tools is None


def test_the_authors_soft_match() -> None:
    entry = _entry()  # ModifyRegistration(appointment_id="34567890", new_appointment_date="2023-03-26")
    call = {
        "name": "ModifyRegistration",
        "parameters": {"new_appointment_date": "2023-03-26", "appointment_id": "34567890"},
    }
    line = json.dumps(call)
    as_ints = json.dumps(
        dict(call, parameters={"appointment_id": 34567890, "new_appointment_date": "2023-03-26"})
    )
    verdicts = {
        f"<think> ok </think>\n<tool_call>\n{line}\n</tool_call>": True,
        # any call
        f'<tool_call>\n{{"name": "GetCurrentTime", "parameters": {{}}}}\n{line}\n</tool_call>': True,
        f"<tool_call>\n{line}\n</tool_call>\n"
        f'<tool_call>\n{{"name": "X", "parameters": {{}}}}\n</tool_call>': False,
        line: True,  # no tag: the whole reply's lines are read
        # bare parameters: the reference's function
        f"<tool_call>\n{json.dumps(call['parameters'])}\n</tool_call>": True,
        f"<tool_call>\n{as_ints}\n</tool_call>": False,
        # a non-object ends the scan, as the authors' loop does
        f"<tool_call>\n[1]\n{line}\n</tool_call>": False,
        f"<tool_call>\n{{not json\n{line}\n</tool_call>": True,  # unparsable lines are skipped
        "I cannot help with that.": False,
    }
    for text, correct in verdicts.items():
        result = apibank.judge(entry, text)
        assert result.correct is correct, text
        assert (result.reason is None) is correct


def test_level_summary_is_micro_averaged() -> None:
    def results(right: int, n: int) -> list[EntryResult]:
        return [EntryResult(str(i), i < right, None, "") for i in range(n)]

    summary = apibank.level_summary(
        {"level_1": results(2, 3), "level_2": results(0, 2), "level_3": results(1, 1)}
    )
    assert summary == {"level_1_acc": 66.67, "level_2_acc": 0.0, "level_3_acc": 100.0, "overall_acc": 50.0}


def test_bad_level_data_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(apibank.ApiBankDataError, match="level-2-api_processed.json does not exist"):
        apibank.load_level(tmp_path, 2)
    (tmp_path / "level-1-api_processed.json").write_text(json.dumps([{"system": "s", "user": "u"}]))
    with pytest.raises(apibank.ApiBankDataError, match="entry 0 is not a processed API-Bank entry"):
        apibank.load_level(tmp_path, 1)
    with pytest.raises(ValueError, match="unknown API-Bank level '4'"):
        apibank.parse_levels("1,4")


def test_eval_apibank_end_to_end(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "apibank.json"
    code = cli.main(
        [
            "eval",
            "apibank",
            "--server",
            server.base_url,
            "--model",
            "tiny-qwen3",
            "--data",
            str(FIXTURES),
            "--levels",
            "1,2,3",
            "--max-new-tokens",
            "16",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert {k: c["total"] for k, c in report["categories"].items()} == {
        "level_1": 3,
        "level_2": 2,
        "level_3": 1,
    }
    assert set(report["apibank"]) == {"level_1_acc", "level_2_acc", "level_3_acc", "overall_acc"}
    correct = sum(c["correct"] for c in report["categories"].values())
    assert report["apibank"]["overall_acc"] == pytest.approx(round(correct / 6 * 100, 2))
    captured = capsys.readouterr()
    assert "apibank level_1: 3/3 done" in captured.err and "API-Bank (authors' leaderboard)" in captured.out
    # Missing data: a usage error before any server is contacted, never a 0% score.
    assert (
        cli.main(
            [
                "eval",
                "apibank",
                "--server",
                server.base_url,
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "none.json"),
            ]
        )
        == 2
    )
    assert "level-1-api_processed.json does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.json").exists()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toolrl")
    assert (
        cli.main(["data", "prepare", "--format", "toolrl", "--in", str(TOOLRL_SOURCE), "--out", str(out)])
        == 0
    )
    return out / "data.jsonl"


def test_toolrl_reference_scores_exact_and_a_wrong_reply_does_not(prepared: Path) -> None:
    records = toolrl_eval.load_records(prepared)
    for prompt, truth in records:
        best = toolrl_eval.judge(prompt, truth["reference"], truth, step=0)
        expected = evaluate(TOOLRL_FORMAT_MAX, 0) + (
            evaluate(TOOLRL_CORRECT_MAX, 0) if "<tool_call>" in truth["reference"] else 0.0
        )
        assert best.correct and best.score == pytest.approx(expected, abs=1e-12)
        wrong = toolrl_eval.judge(prompt, "no idea", truth, step=0)  # neither the format nor the calls
        assert wrong.score < best.score and not wrong.correct
    summary = toolrl_eval.reward_summary([toolrl_eval.judge(p, t["reference"], t, 0) for p, t in records])
    assert set(summary) == {"reward_mean", "format_mean", "correctness_mean"}


def test_eval_toolrl_end_to_end(server: ServerProcess, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "toolrl.json"
    code = cli.main(
        [
            "eval",
            "toolrl",
            "--server",
            server.base_url,
            "--model",
            "tiny-qwen3",
            "--data",
            str(prepared),
            "--limit",
            "2",
            "--max-new-tokens",
            "16",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    entries = report["categories"]["toolrl"]["entries"]
    assert len(entries) == 2 and all(isinstance(e["score"], float) for e in entries)
    assert report["toolrl"]["reward_mean"] == pytest.approx(sum(e["score"] for e in entries) / 2)
    with pytest.raises(toolrl_eval.ToolRLDataError, match="is not a prepared ToolRL record"):
        toolrl_eval.load_records(TOOLRL_SOURCE)  # the raw rlla file, not prepared


def test_prompt_has_no_tools_for_apibank_but_toolrl_keeps_the_records_tools(prepared: Path) -> None:
    prompt, _ = toolrl_eval.load_records(prepared, limit=1)[0]
    assert isinstance(prompt, Prompt) and prompt.tools and prompt.tools[0]["type"] == "function"
