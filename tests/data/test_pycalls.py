"""Python-syntax calls (ToolACE, API-Bank): what parses, and what is reported and how."""

from __future__ import annotations

import pytest

from rest_megatron.data.formats.base import RecordError
from rest_megatron.data.formats.pycalls import looks_like_calls, parse_calls


def test_calls_with_literals_names_with_spaces_and_reserved_keys() -> None:
    text = (
        '[Get Weather(city="Rome, IT", days=3), math.hypot(x=-1.5, y=2e3), '
        "f(from='a', max-results=5, on=true, off=None, xs=[1, (2, 3)], m={'k': [1]})]"
    )
    assert parse_calls(text) == [
        {"name": "Get Weather", "arguments": {"city": "Rome, IT", "days": 3}},
        {"name": "math.hypot", "arguments": {"x": -1.5, "y": 2000.0}},
        {
            "name": "f",
            "arguments": {
                "from": "a",
                "max-results": 5,
                "on": True,
                "off": None,
                "xs": [1, [2, 3]],
                "m": {"k": [1]},
            },
        },
    ]
    assert parse_calls("Calculator(formula='(5+6)*3')") == [
        {"name": "Calculator", "arguments": {"formula": "(5+6)*3"}}
    ]
    assert parse_calls("[now()]") == [{"name": "now", "arguments": {}}]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[f(city=Rome)]", "unparseable_arguments"),
        ("[f('Rome')]", "unparseable_arguments"),
        ("[f(x=1+1)]", "unparseable_arguments"),
        ("[f(x=)]", "unparseable_arguments"),
        ("[f(x='unclosed)]", "unparseable_call"),
        ("[f(x=1]", "unparseable_call"),
        ("[f]", "unparseable_call"),
        ("[]", "unparseable_call"),
    ],
)
def test_broken_calls_raise_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(RecordError) as err:
        parse_calls(text)
    assert err.value.reason == reason


def test_looks_like_calls_tells_calls_from_prose() -> None:
    assert looks_like_calls("[Get Weather(city='Rome')]")
    assert not looks_like_calls("It will be sunny (probably).")
    assert not looks_like_calls('[{"name": "x"}]')
