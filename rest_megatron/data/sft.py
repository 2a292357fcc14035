"""Render chat conversations into token ids with a loss mask on the assistant turns (SFT).

The conversation is rendered once with the chat template; the character spans of assistant turns
come from rendering growing prefixes, and a token is trained on when it lies inside one (the
`<|im_start|>assistant\\n` header is context, the turn's content and its `<|im_end|>` are targets).
"""

from __future__ import annotations

from typing import Any

import torch

ASSISTANT_HEADER = "<|im_start|>assistant\n"


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the [start, end) character spans of every assistant turn's content."""
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:index], tools=tools, tokenize=False) if index else ""
        through = tokenizer.apply_chat_template(messages[: index + 1], tools=tools, tokenize=False)
        if not text.startswith(through) or not through[len(before) :].startswith(ASSISTANT_HEADER):
            raise ValueError(
                "the chat template does not render conversations prefix by prefix; SFT masking needs it"
            )
        # The trailing newline after <|im_end|> is formatting, not a target.
        spans.append((len(before) + len(ASSISTANT_HEADER), len(through.rstrip("\n"))))
        _check_turn_rendered(message, index, text[spans[-1][0] : spans[-1][1]])
    return text, spans


def _check_turn_rendered(message: dict[str, Any], index: int, rendered: str) -> None:
    """Some real chat templates silently drop `tool_calls`: SFT would then train on empty turns."""
    for call in message.get("tool_calls") or []:
        name = call.get("function", call).get("name", "")
        if name and name not in rendered:
            raise ValueError(
                f"the chat template renders assistant message {index} without its tool call {name!r} "
                f"(rendered: {rendered[:80]!r}): SFT would train on turns that lack the calls; use a model "
                "whose chat template renders tool_calls (Qwen2.5/Qwen3 do) or set sft.num_steps=0"
            )


def tokenize_for_sft(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [T] and loss mask [T] (1 on assistant-produced tokens) for one conversation."""
    text, spans = assistant_spans(tokenizer, messages, tools)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [
        int(any(start <= tok_start and tok_end <= end for start, end in spans) and tok_end > tok_start)
        for tok_start, tok_end in encoded["offset_mapping"]
    ]
    return torch.tensor(encoded["input_ids"]), torch.tensor(mask)


def collate(
    examples: list[tuple[torch.Tensor, torch.Tensor]], *, pad_id: int, micro_batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """Next-token micro-batches padded to one common length: tokens, labels, loss_mask, all [B, S]."""
    length = max(len(ids) for ids, _ in examples) - 1
    microbatches = []
    for start in range(0, len(examples), micro_batch_size):
        chunk = examples[start : start + micro_batch_size]
        tokens = torch.full((len(chunk), length + 1), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), length + 1))
        for row, (ids, loss_mask) in enumerate(chunk):
            tokens[row, : len(ids)] = ids
            mask[row, : len(ids)] = loss_mask
        microbatches.append({"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": mask[:, 1:]})
    return microbatches
