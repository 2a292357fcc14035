"""`rest-megatron data prepare` and `data inspect` through the top-level CLI: output files, summary,
exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rest_megatron.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_prepare_writes_data_rejections_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        ["data", "prepare", "--format", "xlam", "--in", str(FIXTURES / "xlam.jsonl"), "--out", str(out)]
    )
    assert code == 0  # some records are bad, but some are good: reported, not fatal
    captured = capsys.readouterr()
    assert "records read      9" in captured.out and "records written   2" in captured.out
    assert "records rejected  7" in captured.out and "undeclared_tool" in captured.out
    assert f"{FIXTURES / 'xlam.jsonl'}:5: undeclared_tool: " in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "data.jsonl",
        "rejected.jsonl",
        "summary.json",
    ]  # no temp files left
    assert len((out / "data.jsonl").read_text().splitlines()) == 2
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [3, 4, 5, 6, 7, 8, 9] and all(
        r["reason"] and r["detail"] for r in rejected
    )
    assert json.loads((out / "summary.json").read_text())["rejected_by_reason"]["invalid_json"] == 1


def test_a_second_run_replaces_every_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(["data", "prepare", "--format", "xlam", "--in", str(FIXTURES / "xlam.jsonl"), "--out", str(out)])
        == 0
    )
    assert (
        main(
            [
                "data",
                "prepare",
                "--format",
                "xlam",
                "--in",
                str(FIXTURES / "xlam_array.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "rejected.jsonl").read_text() == ""
    assert json.loads((out / "summary.json").read_text())["records_read"] == 2


def test_nothing_valid_exits_1_and_still_lists_the_rejections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        ["data", "prepare", "--format", "toolace", "--in", str(FIXTURES / "xlam.jsonl"), "--out", str(out)]
    )
    assert code == 1
    assert "no valid record" in capsys.readouterr().err
    assert (out / "data.jsonl").read_text() == ""
    assert len((out / "rejected.jsonl").read_text().splitlines()) == 9


def test_unreadable_input_and_bad_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert (
        main(["data", "prepare", "--format", "xlam", "--in", str(missing), "--out", str(tmp_path / "o")]) == 2
    )
    assert f"input {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert (
        main(
            [
                "data",
                "prepare",
                "--format",
                "xlam",
                "--in",
                str(FIXTURES / "xlam.jsonl"),
                "--out",
                str(tmp_path / "o"),
                "--answers",
                str(missing),
            ]
        )
        == 2
    )
    assert "--answers is only for --format bfcl" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "prepare",
                "--format",
                "bfcl",
                "--in",
                str(FIXTURES / "bfcl/BFCL_v4_fixture.json"),
                "--out",
                str(tmp_path / "o"),
                "--answers",
                str(missing),
            ]
        )
        == 2
    )
    assert f"answers file {missing} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--format", "nosuch", "--in", "x", "--out", "y"])
    assert exit_.value.code == 2


def test_bfcl_answers_flag(tmp_path: Path) -> None:
    questions = tmp_path / "questions.json"
    questions.write_text((FIXTURES / "bfcl/BFCL_v4_fixture.json").read_text())
    answers = FIXTURES / "bfcl/possible_answer/BFCL_v4_fixture.json"
    assert (
        main(
            [
                "data",
                "prepare",
                "--format",
                "bfcl",
                "--in",
                str(questions),
                "--out",
                str(tmp_path / "a"),
                "--answers",
                str(answers),
            ]
        )
        == 0
    )
    ids = [json.loads(line)["id"] for line in (tmp_path / "a/data.jsonl").read_text().splitlines()]
    assert ids == ["simple_python_0", "parallel_0", "irrelevance_0"]


def test_help_documents_formats_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("toolrl", "xlam", "hammer", "toolace", "bfcl", "apibank"):
        assert f"  {name} " in out
    assert "exit status:" in out and "1  no valid record" in out and "rejected.jsonl" in out


def test_inspect_counts_and_shows_the_first_record(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(FIXTURES / "toolrl.jsonl")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{FIXTURES / 'toolrl.jsonl'}: 5 records, 1 not valid JSON (first at line 3)")
    assert "first record (line 1):" in out and '"instruction":' in out
    assert main(["data", "inspect", str(FIXTURES / "nope.jsonl")]) == 2


def _toolrl_source(path: Path, num: int) -> Path:
    """`num` rlla records from the fixture's first, each with its own question; two repeat a prompt."""
    first = json.loads((FIXTURES / "toolrl.jsonl").read_text().splitlines()[0])
    records = [{**first, "input": f"{first['input']} (question {i})"} for i in range(num)]
    records += [records[3], records[7]]  # public sets repeat prompts: a repeat must not straddle the split
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _prompts(path: Path) -> list[str]:
    return [json.dumps(json.loads(line)["messages"]) for line in path.read_text().splitlines()]


def test_split_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    source = _toolrl_source(tmp_path / "rlla.jsonl", 200)
    whole = ["data", "prepare", "--format", "toolrl", "--in", str(source), "--out", str(tmp_path / "whole")]
    assert main(whole) == 0  # no split: data.jsonl
    args = ["data", "prepare", "--format", "toolrl", "--in", str(source), "--split", "test=0.02"]
    assert main([*args, "--out", str(tmp_path / "a"), "--seed", "7"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "8"]) == 0
    a = tmp_path / "a"
    assert sorted(p.name for p in a.iterdir()) == [
        "rejected.jsonl",
        "summary.json",
        "test.jsonl",
        "train.jsonl",
    ]
    train, test = _prompts(a / "train.jsonl"), _prompts(a / "test.jsonl")
    assert len(test) == 4 and len(set(test)) == 4 and not set(train) & set(test)  # 2% of 200 prompts
    assert sorted(train + test) == sorted(_prompts(tmp_path / "whole" / "data.jsonl"))
    for name in ("train.jsonl", "test.jsonl"):
        assert (a / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert set(_prompts(tmp_path / "c" / "test.jsonl")) != set(test)  # the seed draws another 4 of 200
    assert json.loads((a / "summary.json").read_text())["files"] == {"train.jsonl": 198, "test.jsonl": 4}


def test_split_replaces_an_earlier_unsplit_output_and_refuses_bad_specs(tmp_path: Path) -> None:
    source, out = _toolrl_source(tmp_path / "rlla.jsonl", 20), tmp_path / "out"
    base = ["data", "prepare", "--format", "toolrl", "--in", str(source), "--out", str(out)]
    assert main(base) == 0 and (out / "data.jsonl").is_file()
    assert main([*base, "--split", "test=0.1", "--seed", "1"]) == 0
    assert not (out / "data.jsonl").exists() and (out / "train.jsonl").is_file()
    for bad in (["--split", "test=1.5"], ["--split", "train=0.1"], ["--split", "0.02"], ["--seed", "3"]):
        assert main([*base, *bad]) == 2, bad
