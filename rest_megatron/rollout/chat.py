"""Chat-template rendering to token IDs for the agent loop, without ever re-tokenizing a past turn.

The prompt is rendered once (`prompt_ids`). After that the trajectory only grows:
- assistant turns are the sampled IDs, exactly as sampled;
- a tool turn is rendered as a *suffix*: render(history + tool messages, generation prompt) minus
  render(history). The history's own rendering is never tokenized again; only the new text is.

The sampled turn stops at the end-of-turn token (`<|im_end|>` for ChatML), but the template
closes an assistant turn with more than that (ChatML: `<|im_end|>\\n`). The rest of the closing
(here `\\n`) is not in the sampled IDs, so it leads the tool suffix (loss mask 0, like the tool
text). A turn that stopped on another stop token gets the whole closing.
"""

from __future__ import annotations

from typing import Any

_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "probe_tool_4f2a",
        "description": "Probe whether the chat template lists tools.",
        "parameters": {
            "type": "object",
            "properties": {"probe_arg_9c1e": {"type": "string"}},
            "required": [],
        },
    },
}


def template_renders_tools(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template shows the model the `tools=` it is given.

    Some real templates accept `tools=` and silently drop it (the model would never see its tools).
    The probe renders one user message with a tool whose name and argument appear nowhere else.
    """
    messages = [{"role": "user", "content": "Hello."}]
    try:
        text = tokenizer.apply_chat_template(
            messages, tools=[_PROBE_TOOL], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - a template that cannot take tools at all does not render them
        return False
    name, argument = _PROBE_TOOL["function"]["name"], "probe_arg_9c1e"
    return isinstance(text, str) and name in text and argument in text


class ChatRenderer:
    """Renders prompts and tool turns of one tokenizer's chat template to token IDs."""

    def __init__(self, tokenizer: Any, *, end_of_turn_token: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.end_of_turn = end_of_turn_token or tokenizer.eos_token
        if not self.end_of_turn:
            raise ValueError("the tokenizer has no eos_token; pass end_of_turn_token (e.g. '<|im_end|>')")
        ids = tokenizer.convert_tokens_to_ids([self.end_of_turn])
        if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"end-of-turn token {self.end_of_turn!r} is not in the vocabulary")
        self.end_of_turn_id: int = ids[0]
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; use a chat/instruct model folder")

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        *,
        add_generation_prompt: bool,
    ) -> str:
        """The chat template's text (transformers 5 returns encodings for tokenize=True, so: text)."""
        return self.tokenizer.apply_chat_template(
            messages, tools=tools or None, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        """Token IDs of template text (special tokens are in the text already)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
        """The prompt with the assistant generation header."""
        return self.encode(self.render(messages, tools, add_generation_prompt=True))

    def think_open_at_start(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> bool:
        """True if the generation prompt already opens `<think>` (some Qwen3 templates)."""
        return self.render(messages, tools, add_generation_prompt=True).rstrip().endswith("<think>")

    def assistant_text(self, output_ids: list[int]) -> str:
        """The assistant's text of one sampled turn, without its end-of-turn token."""
        ids = output_ids[:-1] if output_ids and output_ids[-1] == self.end_of_turn_id else output_ids
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def tool_turn_ids(
        self,
        history: list[dict[str, Any]],
        tool_messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        *,
        ended_with_end_of_turn: bool,
    ) -> list[int]:
        """IDs to append after an assistant turn: the rest of its closing, the tool turn(s), and the
        next assistant header. `history` ends with that assistant message."""
        assert history and history[-1]["role"] == "assistant", "the history must end with the assistant turn"
        before = self.render(history, tools, add_generation_prompt=False)
        after = self.render(history + tool_messages, tools, add_generation_prompt=True)
        if not after.startswith(before):
            raise ValueError(
                "the chat template renders a conversation differently once tool messages follow; "
                "the rollout needs a template that renders prefixes stably (Qwen/Hermes ChatML does)"
            )
        cut = before.rfind(self.end_of_turn)
        if cut < 0:
            raise ValueError(
                f"the template does not end assistant turns with {self.end_of_turn!r}; pass "
                "end_of_turn_token to ChatRenderer"
            )
        closing = before[cut:]
        rest = closing[len(self.end_of_turn) :] if ended_with_end_of_turn else closing
        return self.encode(rest + after[len(before) :])
