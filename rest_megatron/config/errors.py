"""The one error type of the config system."""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or override is wrong. The message names the full dotted key and the fix."""
