"""Test oracle: the ResT authors' region weighting rules (their `recipe/custom/token_weighting.py`),
re-implemented from reading them, with a switch for each difference that `region_tagger.py` documents.

Their rules, per response text (the decoded response, special tokens included), with region weights γ:
- every closed `<think>…</think>`: both tags γ_format, the inside γ_reasoning;
- every closed `<response>…</response>` and `<tool_call>…</tool_call>`: both tags γ_format;
- inside every `<tool_call>`/`<toolcall>` block: the characters of the first `"name": "…"` string get
  γ_name, and the first `{…}` object after the first `"arguments"`/`"parameters"` key (braces included,
  JSON strings skipped when matching braces) gets γ_args;
- a token takes the largest γ of the spans mapped onto it; everything else is 0.
A character span becomes a token slice from the tokenizer's offsets: from the first token that starts
at or after the span's start, up to but excluding the first token that ends at or after the span's
end (at least one token).

Switches (each the one our tagger makes, see its docstring): `mapping="overlap"` gives a span to every
token that writes one of its characters; `first_call_only=False` weights every call of a block.
Unclosed blocks and odd JSON (our differences 3 to 5) are left to the caller: the corpus avoids odd
JSON, and tokens from the start of an unclosed block on are the positions difference 3 predicts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PAIRS = {
    "think": re.compile(r"<think>(.*?)</think>", re.S),
    "response": re.compile(r"<response>(.*?)</response>", re.S),
    "tool_call": re.compile(r"<tool_call>(.*?)</tool_call>", re.S),
}
_CALL_BLOCK = re.compile(r"(?:<tool_call>|<toolcall>)(.*?)(?:</tool_call>|</toolcall>)", re.S)
_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')
_ARGS_KEY = re.compile(r'"(?:arguments|parameters)"\s*:\s*')


def _object_end(text: str, start: int) -> int | None:
    """Index after the `}` matching the `{` at `start` (JSON strings skipped), None if unmatched."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def char_spans(text: str, *, first_call_only: bool = True) -> list[tuple[int, int, str]]:
    """(start, end, region) character spans, region one of format/name/args/reasoning."""
    spans: list[tuple[int, int, str]] = []
    for kind, pattern in _PAIRS.items():
        for m in pattern.finditer(text):
            spans.append((m.start(), m.start(1), "format"))  # the opening tag
            spans.append((m.end(1), m.end(), "format"))  # the closing tag
            if kind == "think":
                spans.append((m.start(1), m.end(1), "reasoning"))
    for m in _CALL_BLOCK.finditer(text):
        block, base = m.group(1), m.start(1)
        names = list(_NAME.finditer(block))
        keys = list(_ARGS_KEY.finditer(block))
        if first_call_only:
            names, keys = names[:1], keys[:1]
        spans += [(base + n.start(1), base + n.end(1), "name") for n in names]
        for key in keys:
            brace = block.find("{", key.end())
            end = _object_end(block, brace) if brace >= 0 else None
            if end is not None:
                spans.append((base + brace, base + end, "args"))
    return spans


def token_slice(offsets: Sequence[tuple[int, int]], lo: int, hi: int, *, mapping: str) -> range:
    """The tokens a character span [lo, hi) is mapped to."""
    if mapping == "overlap":
        return (
            range(0)
            if hi <= lo
            else range(
                next((i for i, (a, b) in enumerate(offsets) if b > lo), len(offsets)),
                1 + max((i for i, (a, b) in enumerate(offsets) if a < hi), default=-1),
            )
        )
    first = next((i for i, (a, _) in enumerate(offsets) if a >= lo), None)
    if first is None:  # the authors' `next` would raise here; the span maps to nothing
        return range(0)
    last = next((i for i, (_, b) in enumerate(offsets) if b >= hi), len(offsets))
    return range(first, max(first + 1, last))


def authors_raw_weights(
    text: str,
    offsets: Sequence[tuple[int, int]],
    gammas: dict[str, float],
    *,
    mapping: str = "authors",
    first_call_only: bool = True,
) -> list[float]:
    """Per-token weight before clipping and normalisation: the largest γ of the spans on each token."""
    weights = [0.0] * len(offsets)
    for lo, hi, region in char_spans(text, first_call_only=first_call_only):
        for t in token_slice(offsets, lo, hi, mapping=mapping):
            weights[t] = max(weights[t], gammas[region])
    return weights
