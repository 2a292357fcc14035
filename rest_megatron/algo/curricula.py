"""Curricula: scalars that move with the optimizer step (docs/design.md §4).

ResT's region weights, the entropy exponent α(s) and the ToolRL reward ranges all change with the
optimizer step s. A curriculum is a small frozen object with `__call__(step) -> float`; recipes give
one as a spec that `parse_curriculum` turns into the object:

    0.5                                                   -> Constant(0.5)
    {"linear": {"start": 0.6, "slope": 0.002, "cap": 1.2}} -> Linear(0.6, 0.002, 1.2)
    "linear(start=0.6, slope=0.002, cap=1.2)"             -> the same, for `key=value` overrides
    {"cosine": {"start": 1.0, "end": 0.0, "num_steps": 300}}

`to_spec()` gives the dict form back, so a resolved config can be dumped and reloaded.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Curriculum(Protocol):
    """A scalar schedule over optimizer steps."""

    def __call__(self, step: int | float) -> float: ...

    def to_spec(self) -> dict[str, dict[str, Any]]: ...


@dataclass(frozen=True)
class Constant:
    """The same value at every step."""

    value: float

    def __call__(self, step: int | float) -> float:
        return float(self.value)

    def to_spec(self) -> dict[str, dict[str, Any]]:
        return {"constant": asdict(self)}


@dataclass(frozen=True)
class Linear:
    """start + slope·s, stopped at `cap`.

    `cap` is a ceiling when slope >= 0 (min(start + slope·s, cap)) and a floor when slope < 0
    (max(start + slope·s, cap)), so one field covers both directions; None means unbounded.
    """

    start: float
    slope: float
    cap: float | None = None

    def __call__(self, step: int | float) -> float:
        value = self.start + self.slope * float(step)
        if self.cap is None:
            return value
        return min(value, self.cap) if self.slope >= 0 else max(value, self.cap)

    def to_spec(self) -> dict[str, dict[str, Any]]:
        return {"linear": asdict(self)}


@dataclass(frozen=True)
class Cosine:
    """Half-cosine from `start` (step 0) to `end` (step `num_steps` and after)."""

    start: float
    end: float
    num_steps: int

    def __post_init__(self) -> None:
        if self.num_steps <= 0:
            raise ValueError(f"Cosine curriculum needs num_steps > 0, got {self.num_steps}")

    def __call__(self, step: int | float) -> float:
        progress = min(max(float(step), 0.0) / self.num_steps, 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def to_spec(self) -> dict[str, dict[str, Any]]:
        return {"cosine": asdict(self)}


_KINDS: dict[str, type] = {"constant": Constant, "linear": Linear, "cosine": Cosine}

CurriculumSpec = float | int | str | dict | Curriculum

_CALL_RE = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$")


def _parse_string(spec: str) -> Curriculum:
    text = spec.strip()
    try:
        return Constant(float(text))
    except ValueError:
        pass
    match = _CALL_RE.match(text)
    if match is None:
        raise ValueError(
            f"cannot parse curriculum {spec!r}; write a number or kind(key=value, ...), "
            f"e.g. 'linear(start=0.6, slope=0.002, cap=1.2)'; kinds: {', '.join(_KINDS)}"
        )
    kind, body = match.groups()
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"curriculum {spec!r}: expected key=value, got {item!r}")
        value = value.strip()
        params[key.strip()] = None if value.lower() == "none" else float(value)
    return _build(kind, params, spec)


def _build(kind: str, params: Any, spec: Any) -> Curriculum:
    if kind not in _KINDS:
        raise ValueError(f"unknown curriculum kind {kind!r} in {spec!r}; kinds: {', '.join(_KINDS)}")
    if not isinstance(params, dict):
        # {"constant": 0.5} is a natural shorthand for a constant.
        if kind == "constant":
            return Constant(float(params))
        raise ValueError(f"curriculum {spec!r}: the parameters of {kind!r} must be a mapping")
    if kind == "cosine" and "num_steps" in params:
        params = {**params, "num_steps": int(params["num_steps"])}
    try:
        return _KINDS[kind](**params)
    except TypeError as err:
        raise ValueError(f"curriculum {spec!r}: {err}") from None


def parse_curriculum(spec: CurriculumSpec) -> Curriculum:
    """Turn a number, a `{kind: {params}}` dict, a `kind(k=v, ...)` string or a curriculum into one."""
    if isinstance(spec, bool):
        raise ValueError(f"a curriculum cannot be a bool, got {spec!r}")
    if isinstance(spec, (int, float)):
        return Constant(float(spec))
    if isinstance(spec, str):
        return _parse_string(spec)
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ValueError(f"a curriculum dict has exactly one key (its kind), got {spec!r}")
        ((kind, params),) = spec.items()
        return _build(kind, params, spec)
    if isinstance(spec, Curriculum):
        return spec
    raise ValueError(f"cannot make a curriculum from {spec!r} ({type(spec).__name__})")


def evaluate(spec: CurriculumSpec, step: int | float) -> float:
    """The value of a curriculum spec at `step` (a plain number is returned as a float)."""
    return parse_curriculum(spec)(step)
