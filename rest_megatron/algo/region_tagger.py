"""Token regions from generated token IDs (docs/design.md §4): which part of a response each token wrote.

Regions are computed from the sampled IDs, never from re-tokenized text, in two layers:
1. Decoding. Each ID becomes its raw bytes, exactly as the byte-level BPE decoder does it, and one
   incremental UTF-8 decoder turns the byte stream into characters. A character whose bytes span
   several tokens (a token can hold half of a multi-byte character) is *completed* by the last of
   them, and its region goes to all of them. The pieces join to `tokenizer.decode(ids)`.
2. Parsing. A character-level state machine over the assistant text, fed one character at a time. It
   reads every response format our data sets use: Hermes/Qwen (`"arguments"`, one call per block) and
   ToolRL (`"parameters"`, one JSON call per line, several calls per block, `<response>`):
   - `<think>…</think>`: the tags are FORMAT_TAG, the inside REASONING;
   - `<response>…</response>`: the tags are FORMAT_TAG, the inside ANSWER;
   - `<tool_call>…</tool_call>`: the tags are FORMAT_TAG. Inside, each JSON object is a call (one per
     line, or the items of a JSON list): the characters of its "name" string are TOOL_NAME, its whole
     "arguments"/"parameters" value (`tool_calls.ARGUMENT_KEYS`) TOOL_ARGS, and everything else (braces,
     keys, quotes, colons, commas, newlines, other keys, text that is not JSON) OTHER;
   - text outside the blocks is ANSWER; whitespace that only separates blocks (or starts or ends the
     turn) is OTHER, and so are special tokens such as `<|im_end|>`.
   Tags are matched on characters, so they may be split across tokens in any way. The first
   `</tool_call>` closes a call even inside a JSON string (Hermes parsers use the same rule), and a
   new `<tool_call>` inside an unterminated one starts a new call. Nothing ever raises.

These are the region rules of the ResT authors' `token_weighting.py` (paper mode gives FORMAT_TAG
γ_format, TOOL_NAME γ_name, TOOL_ARGS γ_args, REASONING γ_reasoning, and 0 to ANSWER and OTHER), with
these differences, each on purpose (the differential test `tests/algo/test_regions_vs_authors.py`
checks that the labels agree with a re-implementation of the authors' rules everywhere else):
1. Span -> token mapping. The authors re-tokenize the decoded text and map each character span to
   tokens with offsets: the first token that *starts* inside the span up to, but excluding, the token
   that ends it. That drops the last token of every span of two or more tokens (an argument object's
   closing `}}`, the last word of the reasoning, a tag's last piece), drops a first token that starts
   before the span (`Ġ"get` writes a quote and the name), and when a span lies inside one token marks
   the token after it. Here a token gets the regions of every character it writes (the weighting takes
   the largest γ), computed from the sampled ids.
2. Every call of a block. The authors weight the name and arguments of the *first* call in each
   `<tool_call>` block only (their `re.search`), so the second and later calls of a ToolRL block get
   weight 0; here every call is labelled alike.
3. Unclosed blocks (truncated turns). The authors' regexes only match closed pairs, so a turn cut
   inside `<think>`, `<tool_call>` or `<response>` gets weight 0 for that block, tags included. The
   tagger is streaming (a label is final when its token is fed) and labels an open block as if it
   would close; an unresolved partial tag at the end (`<tool_ca`) is FORMAT_TAG.
4. Blocks inside blocks. The authors' patterns run independently over the whole text, so a
   `<tool_call>` written inside `<think>` is weighted as reasoning *and* as a call; here the inside of
   `<think>` is reasoning only (the rollout executes no call written there either, see tool_calls.py).
   Their name/arguments patterns also match `<toolcall>` blocks, whose tags they never weight; here
   `<toolcall>` is plain text.
5. Odd JSON. The authors take the first `"name": "…"` anywhere in the block and the first `{` anywhere
   after the arguments key; here the JSON is parsed: an arguments value that is a string or a scalar is
   TOOL_ARGS whole, a name that is not a string (or a "name" key nested in the arguments) is not a name.

A token's result is a bitmask (`regions.region_bit`) of every region its characters touch. Tokens
outside the loss mask get OTHER; a token that decodes to nothing (an id beyond the vocabulary) gets
OTHER.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from functools import lru_cache

from tokenizers import decoders

from rest_megatron.algo.regions import Region, primary_region, region_bit
from rest_megatron.algo.tool_calls import (
    ARGUMENT_KEYS,
    RESPONSE_CLOSE,
    RESPONSE_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
)

__all__ = ["RegionTagger", "primary_region", "tag_regions", "token_pieces"]

FORMAT_TAG = region_bit(Region.FORMAT_TAG)
TOOL_NAME = region_bit(Region.TOOL_NAME)
TOOL_ARGS = region_bit(Region.TOOL_ARGS)
REASONING = region_bit(Region.REASONING)
ANSWER = region_bit(Region.ANSWER)
OTHER = region_bit(Region.OTHER)

_TOP_TAGS = (THINK_OPEN, THINK_CLOSE, TOOL_CALL_OPEN, TOOL_CALL_CLOSE, RESPONSE_OPEN, RESPONSE_CLOSE)
_THINK_TAGS = (THINK_CLOSE,)
_CALL_TAGS = (TOOL_CALL_CLOSE, TOOL_CALL_OPEN)
_RESPONSE_TAGS = (RESPONSE_CLOSE,)
_TOP, _THINK, _CALL, _RESPONSE = "top", "think", "call", "response"
# The label of a call's whole value, by key; other keys' values are OTHER.
_VALUE_LABELS = {key: TOOL_ARGS for key in ARGUMENT_KEYS}
# JSON states inside a tool call.
_PRE, _KEY_OR_END, _KEY, _COLON, _VALUE, _NAME_STR, _SCAN, _AFTER, _POST = range(9)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # GPT-2's reversible byte <-> printable-character table, which every byte-level BPE vocab uses.
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class _TokenBytes:
    """Token id -> the bytes the byte-level decoder emits for it, and the set of special ids."""

    def __init__(self, tokenizer: object) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(
                f"region tagging needs a fast (Rust) tokenizer, got {type(tokenizer).__name__}; "
                "load it with AutoTokenizer.from_pretrained(path, use_fast=True)"
            )
        if not isinstance(backend.decoder, decoders.ByteLevel):
            raise ValueError(
                f"region tagging needs a byte-level BPE tokenizer (Qwen2/2.5/3, Llama 3), got decoder "
                f"{type(backend.decoder).__name__}; use a model family with a byte-level vocabulary"
            )
        self._backend = backend
        added = backend.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, tok in added.items() if tok.special)
        self._cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        data = self._cache.get(token_id)
        if data is None:
            token = self._backend.id_to_token(token_id) if 0 <= token_id < 2**32 else None
            if token is None:
                data = b""  # unknown ids decode to nothing, as in `tokenizer.decode`
            else:
                # Same rule as the Rust ByteLevel decoder: map every char through the byte table, or
                # take the token's UTF-8 as is when one char is outside it (some added tokens).
                table = _byte_decoder()
                data = bytes(table[c] for c in token) if all(c in table for c in token) else token.encode()
            self._cache[token_id] = data
        return data


class _CharStream:
    """Incremental UTF-8 over token bytes; each char comes with the first token holding its bytes."""

    def __init__(self) -> None:
        # errors="replace" substitutes maximal invalid subparts, like Rust's from_utf8_lossy.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._owners: list[int] = []  # token index of each byte buffered in the decoder

    @property
    def pending_owners(self) -> list[int]:
        return self._owners

    def push(self, data: bytes, token: int) -> list[tuple[str, int]]:
        text = self._utf8.decode(data)
        first = self._owners[0] if self._owners else token
        owners = self._owners + [token] * len(data)
        num_pending = len(self._utf8.getstate()[0])
        self._owners = owners[len(owners) - num_pending :] if num_pending else []
        return [(c, first if k == 0 else token) for k, c in enumerate(text)]

    def flush(self) -> tuple[list[tuple[str, int]], int]:
        """Chars left at the end (replacement chars for a cut multi-byte char), and their completer."""
        owners, self._owners = self._owners, []
        text = self._utf8.decode(b"", final=True)
        return ([(c, owners[0]) for c in text], owners[-1]) if text else ([], -1)


def token_pieces(token_ids: Sequence[int], tokenizer: object) -> list[str]:
    """The text each token completes; the pieces join to `tokenizer.decode(token_ids)` (without
    `clean_up_tokenization_spaces`). A character split over tokens belongs to the last of them."""
    to_bytes, stream = _TokenBytes(tokenizer), _CharStream()
    pieces = ["".join(c for c, _ in stream.push(to_bytes(int(t)), i)) for i, t in enumerate(token_ids)]
    tail, completer = stream.flush()
    if tail:
        pieces[completer] += "".join(c for c, _ in tail)
    return pieces


class _Parser:
    """The character-level state machine; `labels[i]` is the region bit of char i, 0 while undecided."""

    def __init__(self, think_open: bool) -> None:
        self.chars: list[str] = []
        self.labels: list[int] = []
        self._tag: list[int] = []  # positions of a pending tag prefix (starts with "<")
        self._ws: list[int] = []  # positions of pending top-level whitespace
        self._answer_open = False  # inside an answer span: whitespace there is ANSWER
        self._mode = _THINK if think_open else _TOP
        self._js = _PRE
        self._key = ""  # the current key of the call's outer object
        self._escape = False  # the previous char was a backslash inside a JSON string
        self._scan_label, self._depth, self._in_str, self._scalar = OTHER, 0, False, False

    def push(self, text: str) -> None:
        for ch in text:
            self.chars.append(ch)
            self.labels.append(0)
            self._char(len(self.chars) - 1)

    def end(self) -> None:
        """End of turn or a special token: resolve what is pending and return to the top level."""
        for pos in self._tag:
            self.labels[pos] = FORMAT_TAG
        for pos in self._ws:
            self.labels[pos] = OTHER
        self._tag, self._ws, self._answer_open, self._mode = [], [], False, _TOP

    def provisional(self, pos: int) -> int:
        """The label of char `pos` if the text ended now."""
        return self.labels[pos] or (FORMAT_TAG if pos in self._tag else OTHER)

    def text_label(self) -> int:
        """The label an ordinary (non-space, non-markup) character would get now."""
        if self._mode == _TOP:
            return ANSWER
        if self._mode == _THINK:
            return REASONING
        if self._mode == _RESPONSE:
            return ANSWER
        return {_NAME_STR: TOOL_NAME, _SCAN: self._scan_label}.get(self._js, OTHER)

    def _char(self, pos: int) -> None:
        ch = self.chars[pos]
        if self._tag or ch == "<":
            tags = {_TOP: _TOP_TAGS, _THINK: _THINK_TAGS, _CALL: _CALL_TAGS, _RESPONSE: _RESPONSE_TAGS}[
                self._mode
            ]
            candidate = "".join(self.chars[p] for p in self._tag) + ch
            if candidate in tags:
                for p in [*self._tag, pos]:
                    self.labels[p] = FORMAT_TAG
                self._tag = []
                self._on_tag(candidate)
                return
            if any(t.startswith(candidate) for t in tags):
                self._tag.append(pos)
                return
            # Not a tag after all: the "<" is plain text, the rest is fed again (it may hold a new "<").
            pending, self._tag = self._tag, []
            self._plain(pending[0], self.chars[pending[0]])
            for p in [*pending[1:], pos]:
                self._char(p)
            return
        self._plain(pos, ch)

    def _on_tag(self, tag: str) -> None:
        for p in self._ws:
            self.labels[p] = OTHER  # whitespace before a block separates; it is not answer text
        self._ws, self._answer_open = [], False
        if tag == THINK_OPEN:
            self._mode = _THINK
        elif tag == RESPONSE_OPEN:
            self._mode = _RESPONSE
        elif tag == TOOL_CALL_OPEN:
            self._mode, self._js = _CALL, _PRE
        else:  # a closing tag, matching or stray
            self._mode = _TOP

    def _plain(self, pos: int, ch: str) -> None:
        if self._mode == _THINK:
            self.labels[pos] = REASONING
        elif self._mode == _RESPONSE:
            self.labels[pos] = ANSWER
        elif self._mode == _CALL:
            self._json(pos, ch)
        elif ch.isspace():
            self._ws.append(pos)
        else:
            for p in self._ws:
                self.labels[p] = ANSWER if self._answer_open else OTHER
            self._ws, self._answer_open = [], True
            self.labels[pos] = ANSWER

    def _json(self, pos: int, ch: str) -> None:
        js, label, space = self._js, OTHER, ch.isspace()
        if js == _PRE:
            # A call object, or a JSON list of them ("[" keeps waiting for the first object).
            self._js = _KEY_OR_END if ch == "{" else _PRE if space or ch == "[" else _POST
        elif js == _KEY_OR_END:
            if ch == '"':
                self._js, self._key, self._escape = _KEY, "", False
            elif ch == "}":
                self._js = _POST
            elif not space:
                self._js = _POST
        elif js == _KEY:
            if self._escape or ch not in '"\\':
                self._key, self._escape = self._key + ch, False
            elif ch == "\\":
                self._escape = True
            else:
                self._js = _COLON
        elif js == _COLON:
            if ch == ":":
                self._js = _VALUE
            elif not space:
                self._js = _POST
        elif js == _VALUE:
            if self._key == "name" and ch == '"':
                self._js, self._escape = _NAME_STR, False
            elif not space:
                self._scan_label = _VALUE_LABELS.get(self._key, OTHER)
                self._js, self._depth, self._in_str, self._escape, self._scalar = (
                    _SCAN,
                    0,
                    False,
                    False,
                    False,
                )
                self._scan(pos, ch)
                return
        elif js == _NAME_STR:
            if self._escape or ch not in '"\\':
                label, self._escape = TOOL_NAME, False
            elif ch == "\\":
                label, self._escape = TOOL_NAME, True
            else:
                self._js = _AFTER
        elif js == _SCAN:
            self._scan(pos, ch)
            return
        elif js == _AFTER:
            self._js = _KEY_OR_END if ch == "," else _POST if ch == "}" or not space else _AFTER
        elif js == _POST and ch == "{":
            self._js = _KEY_OR_END  # the next call of the block (ToolRL: one per line; or a list's next item)
        # _POST (after a call's "}", or after text that breaks the JSON shape) is OTHER.
        self.labels[pos] = label

    def _scan(self, pos: int, ch: str) -> None:
        """One JSON value of any kind, all of it labelled `_scan_label`, brackets and strings tracked."""
        if self._in_str:
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                self._in_str = False
                if self._depth == 0:
                    self._js = _AFTER
            self.labels[pos] = self._scan_label
            return
        if self._depth == 0 and (ch in ",}]" or (self._scalar and ch.isspace())):
            self._js = _AFTER  # the value ended just before this char (or was empty)
            self._json(pos, ch)
            return
        self.labels[pos] = self._scan_label
        if ch == '"':
            self._in_str = True
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            if self._depth == 0:
                self._js = _AFTER
        elif self._depth == 0:
            self._scalar = True


class RegionTagger:
    """Streaming region tagger: `feed` the ids of an assistant turn (at once or in pieces).

    Call `start_turn()` before each assistant turn (or pass `end_of_turn=True` to the last `feed` of a
    turn, which starts a new one for the next call). Masks returned by `feed` are final for the tokens
    of that call; a character still undecided when a call returns (a partial tag, trailing
    whitespace, half of a multi-byte character) is labelled as if the text ended there.

    Args:
        tokenizer: a fast byte-level BPE tokenizer (Qwen2/2.5/3, Llama 3).
        think_open_at_start: each turn starts inside `<think>`, for chat templates that put `<think>`
            in the generation prompt.
    """

    def __init__(self, tokenizer: object, *, think_open_at_start: bool = False) -> None:
        self._bytes = _TokenBytes(tokenizer)
        self._think_open = think_open_at_start
        self.start_turn()

    def start_turn(self) -> None:
        """Reset the parser and the UTF-8 state: the next id is the first of a new assistant turn."""
        self._parser = _Parser(self._think_open)
        self._stream = _CharStream()
        self._num_tokens = 0
        self._new_turn_next = False

    def char_labels(self) -> list[tuple[str, int]]:
        """The current (or just ended) turn's parsed characters and their labels (0: undecided)."""
        return list(zip(self._parser.chars, self._parser.labels))

    def feed(self, token_ids: Sequence[int], *, end_of_turn: bool = False) -> list[int]:
        """Region masks of `token_ids`, the next ids of the current turn."""
        if self._new_turn_next:
            self.start_turn()
        base, parser = self._num_tokens, self._parser
        masks = [0] * len(token_ids)
        spans: list[tuple[int, int, int]] = []  # (char position, first token, completing token)

        def parse(chars: list[tuple[str, int]], completer: int) -> None:
            for ch, first in chars:
                spans.append((len(parser.chars), first, completer))
                parser.push(ch)

        for i, token_id in enumerate(token_ids):
            token = base + i
            chars = self._stream.push(self._bytes(int(token_id)), token)
            if int(token_id) in self._bytes.special_ids:
                # Leftovers of earlier tokens (a cut multi-byte char) are text; the special's own
                # characters are not parsed, and it ends any open block.
                parse([c for c in chars if c[1] != token], token - 1)
                parser.end()
                masks[i] = OTHER
            else:
                parse(chars, token)
        if end_of_turn:
            tail, completer = self._stream.flush()
            parse(tail, completer)
            parser.end()
            self._new_turn_next = True
        for pos, first, last in spans:
            label = parser.provisional(pos)
            for token in range(max(first, base), last + 1):
                masks[token - base] |= label
        # Tokens whose bytes still wait for the rest of a character: label them as that character.
        for token in self._stream.pending_owners:
            if token >= base:
                masks[token - base] |= parser.text_label()
        self._num_tokens += len(token_ids)
        return [m or OTHER for m in masks]


def tag_regions(
    token_ids: Sequence[int],
    tokenizer: object,
    loss_mask: Sequence[int] | None = None,
    *,
    think_open_at_start: bool = False,
) -> list[int]:
    """Region masks of a trajectory's tokens (one int per token, see `regions.region_bit`).

    Every maximal run of tokens with loss mask 1 is one assistant turn: the parser restarts at its
    first token. Tokens with loss mask 0 (prompt, tool responses, padding) get OTHER. Without a loss
    mask all tokens form one turn.
    """
    if loss_mask is None:
        loss_mask = [1] * len(token_ids)
    if len(loss_mask) != len(token_ids):
        raise ValueError(
            f"loss_mask has {len(loss_mask)} entries but token_ids has {len(token_ids)}; "
            "pass one loss-mask value per token"
        )
    tagger = RegionTagger(tokenizer, think_open_at_start=think_open_at_start)
    out: list[int] = []
    start = 0
    while start < len(token_ids):
        stop = start
        while stop < len(token_ids) and bool(loss_mask[stop]) == bool(loss_mask[start]):
            stop += 1
        if loss_mask[start]:
            out += tagger.feed(token_ids[start:stop], end_of_turn=True)
        else:
            out += [OTHER] * (stop - start)
        start = stop
    return out
