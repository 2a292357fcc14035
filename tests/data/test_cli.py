"""`rest-megatron data prepare` and `data inspect` through the top-level CLI: output files, summary, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rest_megatron.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_prepare_writes_data_rejections_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["data", "prepare", "--format", "xlam", "--in", str(FIXTURES / "xlam.jsonl"), "--out", str(out)])
    assert code == 0  # some records are bad, but some are good: reported, not fatal
    captured = capsys.readouterr()
    assert "records read      9" in captured.out and "records written   2" in captured.out
    assert "records rejected  7" in captured.out and "undeclared_tool" in captured.out
    assert f"{FIXTURES / 'xlam.jsonl'}:5: undeclared_tool: " in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["data.jsonl", "rejected.jsonl", "summary.json"]  # no temp files left
    assert len((out / "data.jsonl").read_text().splitlines()) == 2
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [3, 4, 5, 6, 7, 8, 9] and all(r["reason"] and r["detail"] for r in rejected)
    assert json.loads((out / "summary.json").read_text())["rejected_by_reason"]["invalid_json"] == 1


def test_a_second_run_replaces_every_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["data", "prepare", "--format", "xlam", "--in", str(FIXTURES / "xlam.jsonl"), "--out", str(out)]) == 0
    assert main(["data", "prepare", "--format", "xlam", "--in", str(FIXTURES / "xlam_array.json"), "--out", str(out)]) == 0
    assert (out / "rejected.jsonl").read_text() == ""
    assert json.loads((out / "summary.json").read_text())["records_read"] == 2


def test_nothing_valid_exits_1_and_still_lists_the_rejections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["data", "prepare", "--format", "toolace", "--in", str(FIXTURES / "xlam.jsonl"), "--out", str(out)])
    assert code == 1
    assert "no valid record" in capsys.readouterr().err
    assert (out / "data.jsonl").read_text() == ""
    assert len((out / "rejected.jsonl").read_text().splitlines()) == 9


def test_unreadable_input_and_bad_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["data", "prepare", "--format", "xlam", "--in", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"input {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["data", "prepare", "--format", "xlam", "--in", str(FIXTURES / "xlam.jsonl"), "--out", str(tmp_path / "o"),
                 "--answers", str(missing)]) == 2
    assert "--answers is only for --format bfcl" in capsys.readouterr().err
    assert main(["data", "prepare", "--format", "bfcl", "--in", str(FIXTURES / "bfcl/BFCL_v4_fixture.json"),
                 "--out", str(tmp_path / "o"), "--answers", str(missing)]) == 2
    assert f"answers file {missing} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--format", "nosuch", "--in", "x", "--out", "y"])
    assert exit_.value.code == 2


def test_bfcl_answers_flag(tmp_path: Path) -> None:
    questions = tmp_path / "questions.json"
    questions.write_text((FIXTURES / "bfcl/BFCL_v4_fixture.json").read_text())
    answers = FIXTURES / "bfcl/possible_answer/BFCL_v4_fixture.json"
    assert main(["data", "prepare", "--format", "bfcl", "--in", str(questions), "--out", str(tmp_path / "a"),
                 "--answers", str(answers)]) == 0
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
