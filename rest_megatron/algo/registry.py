"""Name-keyed registries for the algorithm's extension points.

Every variant (a token-weighting scheme, a policy loss, an aggregation, an advantage estimator, a reward)
registers itself by name with a decorator, and the trainer looks it up by the name the recipe gives.
The core never grows `if variant == ...:` branches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries with a registering decorator and a lookup that names the alternatives."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # used in error messages: "unknown token weights 'foo'"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name` (names are unique)."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry registered as `name`; a ValueError listing the registered names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
