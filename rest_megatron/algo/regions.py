"""Token regions of an assistant response, as ResT weights them (docs/design.md §4).

The region tagger (`region_tagger.py`) labels each generated token with a *bitmask* of the regions its
characters touch, so a token that straddles two regions (say `">` closing a tag and opening reasoning)
keeps both; the weighting then gives it the larger of the two weights, as docs/design.md §4 asks.
"""

from __future__ import annotations

from enum import IntEnum


class Region(IntEnum):
    """Region ids; the bit for region r in a region mask is `1 << r`."""

    FORMAT_TAG = 0  # the tags <think>, </think>, <tool_call>, </tool_call>, <response>, </response>
    TOOL_NAME = 1  # the value of "name" inside a tool call
    TOOL_ARGS = 2  # the "arguments" (or "parameters") value inside a tool call
    REASONING = 3  # text inside <think>...</think>
    ANSWER = 4  # the answer text: outside the blocks, or inside <response>...</response>
    OTHER = 5  # anything else: the JSON scaffolding of a call, whitespace between blocks, end-of-turn tokens


NUM_REGIONS = len(Region)

#: The one region that represents a token touching several (per-region averages, the run log): most
#: specific first, so a token that writes part of a tool name is a tool-name token whatever else it touches.
PRIMARY_PRIORITY: tuple[Region, ...] = (
    Region.TOOL_NAME,
    Region.TOOL_ARGS,
    Region.FORMAT_TAG,
    Region.REASONING,
    Region.ANSWER,
    Region.OTHER,
)


def region_bit(region: Region) -> int:
    """The mask bit of one region."""
    return 1 << int(region)


def regions_in(mask: int) -> list[Region]:
    """The regions set in a region mask, in id order."""
    return [r for r in Region if mask & (1 << int(r))]


def primary_region(mask: int) -> Region:
    """The first region of PRIMARY_PRIORITY set in `mask`; OTHER for an empty mask."""
    for region in PRIMARY_PRIORITY:
        if mask & (1 << int(region)):
            return region
    return Region.OTHER
