"""Region tagging from real token ids of the tiny tokenizer: exact labels, split tags, broken JSON,
masked multi-turn trajectories, and split-invariance / never-raise properties."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rest_megatron.algo.region_tagger import (
    ANSWER,
    FORMAT_TAG,
    OTHER,
    REASONING,
    TOOL_ARGS,
    TOOL_NAME,
    RegionTagger,
    primary_region,
    tag_regions,
    token_pieces,
)
from rest_megatron.algo.regions import Region
from rest_megatron.assets import build_tiny_tokenizer
from rest_megatron.assets.tokenizer import TAG_TOKENS

TOK = build_tiny_tokenizer()
EOS = TOK.eos_token_id
TAG_IDS = {TOK.convert_tokens_to_ids(t) for t in TAG_TOKENS}

F, N, A, R, S, X = FORMAT_TAG, TOOL_NAME, TOOL_ARGS, REASONING, ANSWER, OTHER
# A turn as (text, label of each of its characters).
TURN = [
    ("<think>", F),
    ("\nCall the tool.\n", R),
    ("</think>", F),
    ("\n\n", X),
    ("<tool_call>", F),
    ('\n{"name": "', X),
    ("get_weather", N),
    ('", "arguments": ', X),
    ('{"city": "Paris", "days": [1, 2]}', A),
    ("}\n", X),
    ("</tool_call>", F),
    ("\n", X),
    ("<tool_call>", F),
    ('{"arguments": ', X),
    ('"{\\"q\\": 1}"', A),
    (', "name": "', X),
    ('say\\"hi', N),
    ('"}', X),
    ("</tool_call>", F),
    ("\n", X),
    ("Done: 3 < 4, ok.", S),
    (" \n", X),
]
# A ToolRL turn: "parameters", two calls in one block (one JSON object per line), and a <response>.
TOOLRL_TURN = [
    ("<think>", F),
    (" Two lookups. ", R),
    ("</think>", F),
    ("\n", X),
    ("<tool_call>", F),
    ('\n{"name": "', X),
    ("search", N),
    ('", "parameters": ', X),
    ('{"q": "a b", "k": 2}', A),
    ('}\n{"name": "', X),
    ("fetch", N),
    ('", "parameters": ', X),
    ("{}", A),
    ("}\n", X),
    ("</tool_call>", F),
    ("\n", X),
    ("<response>", F),
    (" I looked both up. ", S),
    ("</response>", F),
]
TURN_TEXT = "".join(text for text, _ in TURN)
TURN_LABELS = [label for text, label in TURN for _ in text]


def encode(*pieces: str) -> list[int]:
    """Encode pieces separately, so no token crosses a piece boundary."""
    return [i for piece in pieces for i in TOK.encode(piece, add_special_tokens=False)]


def char_labels(ids: list[int], **kwargs: bool) -> list[int]:
    tagger = RegionTagger(TOK, **kwargs)
    tagger.feed(ids, end_of_turn=True)
    return [label for _, label in tagger.char_labels()]


def test_exact_character_labels_of_a_turn() -> None:
    ids = encode(TURN_TEXT)
    assert TAG_IDS & set(ids)  # the tags went in as their single added-token ids
    assert char_labels([*ids, EOS]) == TURN_LABELS


def test_exact_character_labels_of_a_toolrl_turn() -> None:
    text = "".join(t for t, _ in TOOLRL_TURN)
    assert char_labels([*encode(text), EOS]) == [label for t, label in TOOLRL_TURN for _ in t]


def test_calls_of_a_json_list_are_all_labelled() -> None:
    text = '<tool_call>[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]</tool_call>'
    expected = [
        ("<tool_call>", F),
        ('[{"name": "', X),
        ("a", N),
        ('", "arguments": ', X),
        ('{"x": 1}', A),
        ('}, {"name": "', X),
        ("b", N),
        ('", "arguments": ', X),
        ("{}", A),
        ("}]", X),
        ("</tool_call>", F),
    ]
    assert char_labels(encode(text)) == [label for t, label in expected for _ in t]


def test_token_masks_follow_their_characters() -> None:
    ids = [*encode(TURN_TEXT), EOS]
    masks = tag_regions(ids, TOK)
    pieces = token_pieces(ids, TOK)
    assert "".join(pieces) == TOK.decode(ids)
    assert masks[-1] == OTHER and pieces[-1] == "<|im_end|>"
    pos = 0
    for piece, mask in zip(pieces[:-1], masks[:-1]):
        expected = 0
        for label in TURN_LABELS[pos : pos + len(piece)]:
            expected |= label
        assert mask == expected, piece
        pos += len(piece)
    by_text = {p: m for p, m in zip(pieces, masks)}
    assert by_text["get"] == N and by_text["Paris"] == A and by_text["<tool_call>"] == F
    assert by_text["</think>"] == F and by_text[" tool"] == R


def test_tags_split_across_tokens() -> None:
    pieces = [
        "<",
        "th",
        "ink>",
        "\nhm\n</",
        "think",
        ">",
        "<tool",
        "_call",
        '>{"name": "f", "argu',
        "ments",
        '": {}}</tool_',
        "call>x",
    ]
    ids = encode(*pieces)
    assert not TAG_IDS & set(ids)  # every tag is split over several ordinary tokens
    assert TOK.decode(ids) == "".join(pieces)
    assert char_labels(ids) == char_labels(encode("".join(pieces)))
    masks = tag_regions(ids, TOK)
    for piece, mask in zip(token_pieces(ids, TOK), masks):
        if piece in ("<", "<tool", "_call", "ink", ">"):
            assert mask == F, piece
        if piece == "ments":
            assert mask == X, piece
    assert masks[-1] == S  # "x" after the call


def test_two_calls_in_one_turn() -> None:
    text = (
        '<tool_call>{"name": "alpha", "arguments": {"a": 1}}</tool_call>'
        '<tool_call>{"name": "beta", "arguments": {}}</tool_call>'
    )
    ids = encode(text)
    pieces = token_pieces(ids, TOK)
    masks = tag_regions(ids, TOK)
    names = "".join(p for p, m in zip(pieces, masks) if m & N)
    assert names == "alphabeta"
    assert sum(m == F for p, m in zip(pieces, masks) if p == "<tool_call>") == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Truncated inside the arguments: everything after "arguments": is TOOL_ARGS.
        (
            '<tool_call>{"name": "f", "arguments": {"city": "Par',
            [("<tool_call>", F), ('{"name": "', X), ("f", N), ('", "arguments": ', X), ('{"city": "Par', A)],
        ),
        # Truncated inside the name, then inside a tag: the partial tag counts as a tag.
        ('<tool_call>{"name": "get_w', [("<tool_call>", F), ('{"name": "', X), ("get_w", N)]),
        ("ok <tool_ca", [("ok", S), (" ", X), ("<tool_ca", F)]),
        # Not JSON at all: no name, no arguments (OTHER), and the turn goes on after the close tag.
        (
            '<tool_call>get(city="Paris")</tool_call> Yes',
            [("<tool_call>", F), ('get(city="Paris")', X), ("</tool_call>", F), (" ", X), ("Yes", S)],
        ),
        # A second <tool_call> inside an unterminated one starts a new call.
        (
            '<tool_call>{"name": "a<tool_call>{"name": "b"}',
            [
                ("<tool_call>", F),
                ('{"name": "', X),
                ("a", N),
                ("<tool_call>", F),
                ('{"name": "', X),
                ("b", N),
                ('"}', X),
            ],
        ),
        # Stray closers, no <think>, "<" that is not a tag, and an unterminated think.
        ("</think>a <b</tool_call>", [("</think>", F), ("a <b", S), ("</tool_call>", F)]),
        ("<think>x <tool_call> y", [("<think>", F), ("x <tool_call> y", R)]),
        # A non-string name is not a name; a scalar argument value is arguments.
        (
            '<tool_call>{"name": null, "arguments": 7 }',
            [("<tool_call>", F), ('{"name": null, "arguments": ', X), ("7", A), (" }", X)],
        ),
        # A truncated <response>: its tag is a tag, its text answer.
        ("<response>Sure", [("<response>", F), ("Sure", S)]),
    ],
)
def test_truncated_and_malformed_turns(text: str, expected: list[tuple[str, int]]) -> None:
    assert "".join(t for t, _ in expected) == text
    assert char_labels(encode(text)) == [label for t, label in expected for _ in t]


def test_special_token_ends_open_blocks() -> None:
    for opened in ("<think>abc", '<tool_call>{"name": "x', '<tool_call>{"name": "x", "arguments": {"a'):
        yes = encode("Yes.")
        ids = [*encode(opened), EOS, *yes]
        assert tag_regions(ids, TOK)[-len(yes) - 1 :] == [OTHER] + [S] * len(yes), opened


def test_think_open_at_start() -> None:
    text = "plan\n</think>\n\nAnswer"
    assert char_labels(encode(text), think_open_at_start=True) == [R] * 5 + [F] * 8 + [X] * 2 + [S] * 6
    assert char_labels(encode(text))[:4] == [S] * 4


def test_multi_turn_trajectory_with_masked_tool_responses() -> None:
    prompt = TOK.apply_chat_template(
        [{"role": "user", "content": "Weather?"}], add_generation_prompt=True, tokenize=False
    )
    turn1 = encode('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')  # cut off mid-call
    response = "\n<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    turn2 = encode("Sunny.")
    ids = [*encode(prompt), *turn1, EOS, *encode(response), *turn2, EOS]
    loss = (
        [0] * len(encode(prompt))
        + [1] * (len(turn1) + 1)
        + [0] * len(encode(response))
        + [1] * (len(turn2) + 1)
    )
    masks = tag_regions(ids, TOK, loss)
    assert len(masks) == len(ids)
    assert all(m == OTHER for m, keep in zip(masks, loss) if not keep)
    # The parser restarted at turn 2: "Sunny." is an answer, not the rest of the cut-off arguments.
    assert masks[-len(turn2) - 1 : -1] == [S] * len(turn2)
    assert masks[-1] == OTHER
    # Streaming turn by turn gives the same masks as the whole trajectory.
    tagger = RegionTagger(TOK)
    t1 = tagger.feed([*turn1, EOS], end_of_turn=True)
    t2 = tagger.feed([*turn2, EOS], end_of_turn=True)
    assert [m for m, keep in zip(masks, loss) if keep] == t1 + t2


def test_multibyte_characters_split_over_tokens() -> None:
    text = "<think>温度 😀 ok</think>é"
    ids = encode(text)
    pieces = token_pieces(ids, TOK)
    assert "".join(pieces) == text and "" in pieces  # some token holds only part of a character
    masks = tag_regions(ids, TOK)
    for piece, mask in zip(pieces, masks):
        if piece == "":
            assert mask in (R, S)  # the region of the character it helps to write
    assert masks[-1] == S
    # Streaming byte by byte: a token that ends mid-character is labelled like that character.
    tagger = RegionTagger(TOK)
    assert [tagger.feed([i])[0] for i in ids] == masks


def test_primary_region_priority() -> None:
    assert primary_region(N | A | F) is Region.TOOL_NAME
    assert primary_region(A | F) is Region.TOOL_ARGS
    assert primary_region(F | R) is Region.FORMAT_TAG
    assert primary_region(R | S | X) is Region.REASONING
    assert primary_region(S | X) is Region.ANSWER
    assert primary_region(X) is primary_region(0) is Region.OTHER


def test_user_errors() -> None:
    with pytest.raises(ValueError, match="one loss-mask value per token"):
        tag_regions([1, 2, 3], TOK, [1, 1])
    word_level = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="byte-level BPE"):
        RegionTagger(PreTrainedTokenizerFast(tokenizer_object=word_level))


# --- properties -------------------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-999, 999) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=6,
)
_CALLS = st.builds(
    lambda name, args: (
        "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"
    ),
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=6), _JSON_VALUES, max_size=3),
)
_FRAGMENTS = st.one_of(
    _CALLS,
    st.sampled_from(
        ["<think>", "</think>", "<tool_call>", "</tool_call>", "\n\n", " ", '{"', '"}', "<", ">"]
    ),
    st.text(alphabet='ab <>{}":,\n\\/_é中😀', max_size=12),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=8), st.data())
def test_character_labels_do_not_depend_on_token_boundaries(
    fragments: list[str], data: st.DataObject
) -> None:
    text = "".join(fragments)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=10)))
    # The normalizer is NFC (as in Qwen): only NFC text reaches the ids unchanged.
    pieces = [
        unicodedata.normalize("NFC", text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)]) if a < b
    ]
    text = "".join(pieces)
    assume("<|" not in text and unicodedata.normalize("NFC", text) == text)
    ids = encode(*pieces)
    assert TOK.decode(ids) == text
    labels = char_labels(ids)
    assert labels == char_labels(encode(text))
    assert len(labels) == len(text) and all(label in (F, N, A, R, S, X) for label in labels)
    masks = tag_regions([*ids, EOS], TOK)
    assert all(masks) and masks[-1] == OTHER


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(TOK) + 40), max_size=40), st.data())
def test_random_ids_never_raise_and_pieces_match_decode(ids: list[int], data: st.DataObject) -> None:
    loss = data.draw(st.lists(st.integers(0, 1), min_size=len(ids), max_size=len(ids)))
    masks = tag_regions(ids, TOK, loss)
    assert len(masks) == len(ids) and all(0 < m < 64 for m in masks)
    assert "".join(token_pieces(ids, TOK)) == TOK.decode(ids)
    tagger = RegionTagger(TOK)
    assert len([m for i in ids for m in tagger.feed([i])]) == len(ids)
