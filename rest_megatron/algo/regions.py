"""Token regions of an assistant response, as ResT weights them (DESIGN.md §4).

The region tagger (`region_tagger.py`) labels each generated token with a *bitmask* of the regions its
characters touch, so a token that straddles two regions (say `">` closing a tag and opening reasoning)
keeps both; the weighting then gives it the larger of the two weights, as DESIGN.md §4 asks.
"""

from __future__ import annotations

from enum import IntEnum


class Region(IntEnum):
    """Region ids; the bit for region r in a region mask is `1 << r`."""

    FORMAT_TAG = 0  # <think>, </think>, <tool_call>, </tool_call> and the JSON punctuation around fields
    TOOL_NAME = 1  # the value of "name" inside a tool call
    TOOL_ARGS = 2  # the "arguments" object inside a tool call
    REASONING = 3  # text inside <think>...</think>
    ANSWER = 4  # the final answer text outside think and tool-call blocks
    OTHER = 5  # anything else (end-of-turn tokens, whitespace between blocks)


NUM_REGIONS = len(Region)


def region_bit(region: Region) -> int:
    """The mask bit of one region."""
    return 1 << int(region)


def regions_in(mask: int) -> list[Region]:
    """The regions set in a region mask, in id order."""
    return [r for r in Region if mask & (1 << int(r))]
