"""Limits: validation messages and how a request narrows the server's caps."""

from __future__ import annotations

import pytest

from tools_sandbox.limits import MIB, Limits, truncation_marker


def test_defaults_map_to_rlimits() -> None:
    limits = Limits(cpu_s=1.5, memory_mb=256, file_size_mb=2)
    assert limits.rlimits() == {"cpu": 2, "as": 256 * MIB, "nproc": 64, "fsize": 2 * MIB, "nofile": 256}


@pytest.mark.parametrize(
    "field, value", [("cpu_s", 0), ("memory_mb", -1), ("wall_s", float("inf")), ("output_bytes", True)]
)
def test_invalid_values_name_the_field_and_the_fix(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"Limits.{field}=.*(positive|number)"):
        Limits(**{field: value})


def test_requests_can_lower_but_never_raise_the_caps() -> None:
    server = Limits(wall_s=10, cpu_s=10, memory_mb=1024)
    assert server.narrowed(wall_s=2).wall_s == 2 and server.narrowed(wall_s=2).cpu_s == 2
    assert server.narrowed(wall_s=100).wall_s == 10
    assert server.narrowed(memory_mb=-1) is server  # SandboxFusion's "default"
    assert server.narrowed(memory_mb=4096).memory_mb == 1024
    assert server.narrowed(memory_mb=1).memory_mb == 16  # an interpreter needs some room


def test_truncation_marker_reports_the_dropped_bytes() -> None:
    assert "123 more bytes over the 10-byte limit" in truncation_marker(123, 10)
