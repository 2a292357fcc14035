"""A small on-disk cache of built assets, safe for concurrent test processes.

Each entry is a directory named by a content key. It is built in a private temporary directory
next to its final place and renamed into place in one step, so a reader sees either nothing or a
complete entry; when two processes race, the loser deletes its copy and uses the winner's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """`$REST_MEGATRON_CACHE`, else `~/.cache/rest-megatron`."""
    env = os.environ.get("REST_MEGATRON_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rest-megatron"


def cache_key(**parts: object) -> str:
    """A short stable hash of the JSON-serialisable `parts`."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_dir(name: str, build: Callable[[Path], None]) -> Path:
    """Return `cache_root()/name`, calling `build(tmp_dir)` first if it does not exist yet."""
    root = cache_root()
    final = root / name
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        build(tmp)
        os.rename(tmp, final)
    except OSError:
        # Another process renamed its copy into place first (rename onto a non-empty directory fails).
        if not final.is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
