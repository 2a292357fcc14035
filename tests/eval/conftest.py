"""Shared by the BFCL tests: skip them all when bfcl-eval is not installed."""

from __future__ import annotations

import importlib.util

import pytest

BFCL_MISSING = importlib.util.find_spec("bfcl_eval") is None
needs_bfcl = pytest.mark.skipif(
    BFCL_MISSING,
    reason="bfcl-eval is not installed (`pip install --no-deps bfcl-eval`, "
    "the `bfcl` extra); its data files are the test input",
)
