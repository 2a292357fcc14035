"""A tiny Qwen-style byte-level BPE tokenizer, trained locally and deterministically from a seed.

Tests and CPU recipes need a real tokenizer without any hub access. This one is trained with the
`tokenizers` library on synthetic tool-calling text (`_corpus.py`) and mirrors Qwen2/Qwen3:
- the Qwen2 pre-tokenizer regex (digits split one by one) followed by byte-level BPE;
- specials `<|endoftext|>` (pad, id 0), `<|im_start|>` (id 1) and `<|im_end|>` (eos, id 2);
- `<think>`, `</think>`, `<tool_call>`, `</tool_call>`, `<tool_response>`, `</tool_response>` as
  regular (non-special) added tokens with single ids, as Qwen3 ships them. The BPE also learned the
  pieces of these tags, so text that reaches the model split differently tokenizes to several ids.
- the chat template in `chat_template.jinja` (Hermes tool calls, tool results as a `user` turn).

The same seed gives a byte-identical `tokenizer.json`. Built tokenizers are cached under
`$REST_MEGATRON_CACHE` (default `~/.cache/rest-megatron`), keyed by the builder version, the seed,
the template and the library versions (a new `tokenizers` release may train differently).
"""

from __future__ import annotations

import json
from pathlib import Path

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from rest_megatron.assets._cache import cache_key, cached_dir
from rest_megatron.assets._corpus import corpus

# Bump when anything below changes what gets built, so stale cache entries are not reused.
BUILDER_VERSION = 1

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, EOS_TOKEN)  # ids 0, 1, 2 (the trainer puts them first)
TAG_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# Size of the trained vocabulary (specials included) and of the whole tokenizer. The corpus is large
# enough that the trainer always reaches BPE_VOCAB_SIZE, so the size does not depend on the seed.
BPE_VOCAB_SIZE = 1536
TOKENIZER_SIZE = BPE_VOCAB_SIZE + len(TAG_TOKENS)
_NUM_DOCUMENTS = 4000

# Qwen2's pre-tokenizer split: contractions, words, single digits, punctuation runs, newlines, spaces.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")


def chat_template() -> str:
    """The tool-calling chat template shipped with the tiny tokenizer."""
    return CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")


def _train(seed: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed, _NUM_DOCUMENTS), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    assert tok.get_vocab_size(with_added_tokens=True) == TOKENIZER_SIZE, "corpus too small for the vocab"
    return tok


def _tokenizer_config() -> dict[str, object]:
    # Written by hand, not by `save_pretrained`: transformers 5 writes `"tokenizer_class":
    # "TokenizersBackend"` and a list-valued `extra_special_tokens`, which transformers 4.x cannot
    # load. These keys mean the same to both.
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "bos_token": None,
        "unk_token": None,
        "additional_special_tokens": [IM_START],
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "chat_template": chat_template(),
    }


def save_tiny_tokenizer(out_dir: str | Path, seed: int = 0) -> Path:
    """Train the tiny tokenizer for `seed` and save it (with the chat template) into `out_dir`.

    Writes `tokenizer.json`, `tokenizer_config.json` (template inline, for transformers < 4.47) and
    `chat_template.jinja`; `AutoTokenizer.from_pretrained(out_dir)` loads it offline.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}; pass e.g. seed=0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _train(seed).save(str(out / "tokenizer.json"))
    config = json.dumps(_tokenizer_config(), indent=2, ensure_ascii=False) + "\n"
    (out / "tokenizer_config.json").write_text(config, encoding="utf-8")
    (out / "chat_template.jinja").write_text(chat_template(), encoding="utf-8")
    return out


def tiny_tokenizer_dir(seed: int = 0) -> Path:
    """The cached directory holding the tiny tokenizer for `seed`, built on first use."""
    key = cache_key(
        builder=BUILDER_VERSION,
        seed=seed,
        template=chat_template(),
        tokenizers=tokenizers.__version__,
        transformers=transformers.__version__,
    )
    return cached_dir(f"tokenizer-{key}", lambda tmp: save_tiny_tokenizer(tmp, seed))


def build_tiny_tokenizer(seed: int = 0) -> PreTrainedTokenizerFast:
    """The tiny tokenizer for `seed` (cached on disk; loading it needs no network)."""
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir(seed)))
