"""Curricula: values at chosen steps (hand-computed) and the spec parser."""

import dataclasses
import math

import pytest

from rest_megatron.algo.curricula import Constant, Cosine, Curriculum, Linear, evaluate, parse_curriculum


def test_constant():
    c = Constant(0.7)
    assert [c(s) for s in (0, 10, 10_000)] == [0.7, 0.7, 0.7]


def test_linear_rising_stops_at_cap():
    c = Linear(start=0.6, slope=0.002, cap=1.2)
    # 0.6 + 0.002·s: s=0 -> 0.6, s=100 -> 0.8, s=299 -> 1.198, s=300 -> 1.2 (cap), s=1000 -> 1.2
    assert c(0) == pytest.approx(0.6)
    assert c(100) == pytest.approx(0.8)
    assert c(299) == pytest.approx(1.198)
    assert c(300) == pytest.approx(1.2)
    assert c(1000) == 1.2


def test_linear_falling_stops_at_floor():
    c = Linear(start=2.0, slope=-0.01, cap=1.0)
    # 2 − 0.01·s: s=50 -> 1.5, s=100 -> 1.0, s=500 -> floor 1.0 (not −3)
    assert c(50) == pytest.approx(1.5)
    assert c(100) == pytest.approx(1.0)
    assert c(500) == 1.0


def test_linear_without_cap_is_unbounded():
    assert Linear(start=1.0, slope=-0.5)(10) == pytest.approx(-4.0)


def test_cosine():
    c = Cosine(start=1.0, end=0.0, num_steps=100)
    # end + (start − end)·½(1 + cos(π s/N)): s=0 -> 1, s=25 -> ½(1 + √2/2) = 0.853553, s=50 -> 0.5,
    # s=100 -> 0, and it stays at `end` afterwards.
    assert c(0) == pytest.approx(1.0)
    assert c(25) == pytest.approx(0.8535533906)
    assert c(50) == pytest.approx(0.5)
    assert c(100) == pytest.approx(0.0, abs=1e-15)
    assert c(400) == pytest.approx(0.0, abs=1e-15)
    rising = Cosine(start=0.2, end=1.0, num_steps=10)
    assert rising(5) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="num_steps"):
        Cosine(start=1.0, end=0.0, num_steps=0)


def test_curricula_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Linear(0.0, 1.0).start = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "spec, expected",
    [
        (0.5, Constant(0.5)),
        (2, Constant(2.0)),
        ("1.25", Constant(1.25)),
        ({"constant": 0.3}, Constant(0.3)),
        ({"constant": {"value": 0.3}}, Constant(0.3)),
        ({"linear": {"start": 0.6, "slope": 0.002, "cap": 1.2}}, Linear(0.6, 0.002, 1.2)),
        ({"linear": {"start": 0.6, "slope": 0.002}}, Linear(0.6, 0.002, None)),
        ("linear(start=0.6, slope=0.002, cap=1.2)", Linear(0.6, 0.002, 1.2)),
        ("linear(start=1, slope=-0.5, cap=none)", Linear(1.0, -0.5, None)),
        ({"cosine": {"start": 1.0, "end": 0.0, "num_steps": 300}}, Cosine(1.0, 0.0, 300)),
        ("cosine(start=1, end=0, num_steps=300)", Cosine(1.0, 0.0, 300)),
    ],
)
def test_parse(spec, expected):
    parsed = parse_curriculum(spec)
    assert parsed == expected
    assert isinstance(parsed, Curriculum)


def test_parse_passes_curricula_through_and_round_trips_specs():
    for c in (Constant(0.1), Linear(0.6, 0.002, 1.2), Cosine(1.0, 0.0, 300)):
        assert parse_curriculum(c) is c
        assert parse_curriculum(c.to_spec()) == c
    assert isinstance(parse_curriculum("cosine(start=1, end=0, num_steps=300)").num_steps, int)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"wavy": {"start": 1}}, "unknown curriculum kind 'wavy'"),
        ("wavy(start=1)", "unknown curriculum kind 'wavy'"),
        ("linear start 1", "cannot parse curriculum"),
        ("linear(start)", "expected key=value"),
        ({"linear": {"start": 1}, "cosine": {}}, "exactly one key"),
        ({"linear": {"start": 1, "slope": 2, "bogus": 3}}, "bogus"),
        ({"linear": 3}, "must be a mapping"),
        (True, "bool"),
        ([1, 2], "cannot make a curriculum"),
    ],
)
def test_parse_errors_say_what_to_write(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_curriculum(spec)


def test_evaluate():
    assert evaluate(0.25, 1000) == 0.25
    assert evaluate({"linear": {"start": 0.6, "slope": 0.002, "cap": 1.0}}, 150) == pytest.approx(0.9)
    assert math.isclose(evaluate("cosine(start=2, end=0, num_steps=4)", 2), 1.0)
