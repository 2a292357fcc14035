"""User tool modules named in a recipe: `my_pkg.tools` (importable) or `path/to/tools.py`.

A module exposes `TOOLS = [function, ...]` (schemas come from signatures and Google-style
docstrings, or a function's own `__tool_schema__` dict), and/or `ENVIRONMENT = SomeClass`, built
per session as `SomeClass(**config)` with its public methods as tools (or the names in its `TOOLS`
attribute). `ENV_NAME` overrides the environment name (default: the module's last name part).

The service never imports user code: it only finds where the module lives (for the read-only
bind and `sys.path`); the schemas are produced by importing the module inside a sandbox.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UserModule:
    """Where a user tool module lives."""

    module: str
    """The name to import inside the sandbox."""
    search_dir: str
    """The directory to put on `sys.path` (and bind read-only)."""


def locate(spec: str) -> UserModule:
    """Resolve a recipe's module spec without executing the module.

    Raises:
        ValueError: the file or the top-level package cannot be found (the message has the fix).
    """
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ValueError(
                f"tool module file {spec!r} does not exist; give an existing .py path or a "
                "module name importable by the server's Python."
            )
        return UserModule(module=path.stem, search_dir=str(path.parent))
    top = spec.split(".", 1)[0]
    # find_spec of a top-level name locates it without running it (dotted names would import parents).
    found = importlib.util.find_spec(top)
    if found is None or found.origin is None and not found.submodule_search_locations:
        raise ValueError(
            f"tool module {spec!r}: top-level package {top!r} is not importable; install it "
            "or give a path to the .py file."
        )
    location = (
        Path(found.origin).parent
        if found.submodule_search_locations is None
        else Path(list(found.submodule_search_locations)[0])
    )
    search_dir = location.parent if found.submodule_search_locations is not None else location
    return UserModule(module=spec, search_dir=str(search_dir))
