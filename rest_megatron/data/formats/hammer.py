"""Hammer's training data (MadeAgents): xLAM's record shape plus irrelevance records.

Hammer (Lin et al. 2024) trains on xlam-function-calling-60k with function masking (tool and parameter
names replaced by random strings, descriptions kept) and adds XLAM-7.5k-Irrelevance, whose records carry
`"answers": "[]"`: the right action is to call nothing. Both keep xLAM's fields, so the reader is xLAM's;
the one difference is that an empty `answers` is valid here and becomes `calls: []` with
`no_call_expected: true`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rest_megatron.data.formats.base import ConvertOptions, Outcome, per_record
from rest_megatron.data.formats.xlam import convert_query_record


def convert(path: Path, options: ConvertOptions) -> Iterator[Outcome]:
    """Every record of a Hammer (xLAM-shaped) file."""
    return per_record(path, lambda record: convert_query_record(record, source="hammer", allow_no_call=True))
