"""The name-keyed registry shared by every algorithm extension point."""

import pytest

from rest_megatron.algo.registry import Registry


def test_register_get_and_list():
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("a") == 1 and reg.get("b") == 2
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"]
    assert "a" in reg and "c" not in reg


def test_unknown_name_lists_the_registered_ones():
    reg: Registry[int] = Registry("thing")
    reg.register("alpha")(1)
    reg.register("beta")(2)
    with pytest.raises(ValueError, match=r"unknown thing 'gamma'; registered: alpha, beta"):
        reg.get("gamma")


def test_duplicate_name_is_refused():
    reg: Registry[int] = Registry("thing")
    reg.register("x")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(2)
    assert reg.get("x") == 1
