"""The tiny tokenizer's chat template renders Qwen/Hermes tool conversations exactly."""

from __future__ import annotations

from rest_megatron.assets import build_tiny_tokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOLS_JSON = (
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
)
TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + TOOLS_JSON
    + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call><|im_end|>\n"
)


def render(messages: list[dict], **kwargs: object) -> str:
    return build_tiny_tokenizer().apply_chat_template(messages, tokenize=False, **kwargs)


def test_plain_turns_and_generation_prompt() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert render(messages) == "<|im_start|>user\nHi<|im_end|>\n"
    assert (
        render(messages, add_generation_prompt=True)
        == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [
        {"role": "system", "content": "Be brief."},
        *messages,
        {"role": "assistant", "content": "Hello"},
    ]
    assert render(with_system) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
    )


def test_multi_turn_tool_conversation() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            ],
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "Paris 21, Oslo 3.", "reasoning_content": "Both known."},
        {"role": "user", "content": "Thanks"},
    ]
    expected = (
        "<|im_start|>system\nBe brief.\n\n"
        + TOOLS_HEADER
        + "<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n"
        '{"temp": 21}\n</tool_response>\n<tool_response>\n{"temp": 3}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n<think>\nBoth known.\n</think>\n\nParis 21, Oslo 3.<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render(messages, tools=TOOLS, add_generation_prompt=True) == expected


def test_tools_without_system_and_call_after_text() -> None:
    messages = [
        {"role": "user", "content": "Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        },
    ]
    assert render(messages, tools=TOOLS) == (
        "<|im_start|>system\n"
        + TOOLS_HEADER
        + "<|im_start|>user\nParis?<|im_end|>\n<|im_start|>assistant\nChecking.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
    )


def test_tokenized_template_uses_single_special_ids() -> None:
    tok = build_tiny_tokenizer()
    text = render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids) == text
