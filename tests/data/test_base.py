"""Reading sources: JSONL and JSON arrays, line numbers, and inputs that cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from rest_megatron.data.formats.base import InputError, Rejected, iter_json_records


def read(tmp_path: Path, text: str | bytes) -> list:
    path = tmp_path / "in.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return list(iter_json_records(path))


def test_jsonl_skips_blank_lines_and_keeps_going_after_a_bad_one(tmp_path: Path) -> None:
    items = read(tmp_path, '{"a": 1}\n\n{"a": \n[1]\n')
    assert items[0] == (1, {"a": 1})
    assert isinstance(items[1], Rejected) and items[1].line == 3 and items[1].reason == "invalid_json"
    assert items[2] == (4, [1])


def test_arrays_give_each_element_its_starting_line(tmp_path: Path) -> None:
    assert read(tmp_path, '[\n {"a": 1},\n\n {"b":\n   2}, 3\n]\n') == [(2, {"a": 1}), (4, {"b": 2}), (5, 3)]
    assert read(tmp_path, "  []  ") == []


def test_a_broken_array_element_stops_the_read_with_its_line(tmp_path: Path) -> None:
    items = read(tmp_path, '[{"a": 1},\n {"b": oops},\n {"c": 3}]')
    assert items[0] == (1, {"a": 1})
    assert isinstance(items[1], Rejected) and items[1].line == 2 and "rest of the file" in items[1].detail
    assert len(items) == 2
    trailing = read(tmp_path, '[{"a": 1}]\n{"b": 2}\n')
    assert isinstance(trailing[-1], Rejected) and trailing[-1].line == 1


def test_unreadable_inputs_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        list(iter_json_records(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="is not a file"):
        list(iter_json_records(tmp_path))
    with pytest.raises(InputError, match="not UTF-8"):
        read(tmp_path, b'{"a": "\xff\xfe"}\n')
