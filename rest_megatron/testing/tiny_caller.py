"""A tiny tool-calling model for rollout tests and benchmarks, fine-tuned locally in about a minute.

The random-init tiny Qwen3 (`rest_megatron.assets`) is trained with plain torch AdamW on
demonstrations of the tiny task's arithmetic questions (`data.tiny_task.demonstration`), so it emits
well-formed `<tool_call>` blocks, reads tool results and answers. Two trigger words in the user turn
give deterministic behaviours that the tests need:

| user turn starts with | the model (greedy)                                                  |
|-----------------------|---------------------------------------------------------------------|
| (nothing)             | calculator calls, then "The answer is N."                            |
| `broken:`             | a malformed call (`calculator(expression="...")`, not JSON)          |
| `slow:`               | calls the `python` tool with code that sleeps `SLOW_SECONDS` first    |

The folder (weights, tokenizer, chat template) is cached like the tiny assets, keyed by everything
that shapes it, so only the first use pays for training.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import transformers

from rest_megatron.algo.tool_calls import parse_tool_calls
from rest_megatron.assets import tiny_model_dir
from rest_megatron.assets._cache import cache_key, cached_dir
from rest_megatron.data.sft import collate, tokenize_for_sft
from rest_megatron.data.tiny_task import CALCULATOR_TOOL, TinyTaskSample, demonstration, make_tiny_task

VERSION = 4
SLOW_SECONDS = 4
PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python code in a sandbox and return what it prints.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    },
}
_BROKEN_CALL = '<tool_call>\ncalculator(expression="{expr}")\n</tool_call>'


def prompt_messages(
    sample: TinyTaskSample, mode: str = "normal"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(prompt messages, tool schemas) of `sample` in one of the modes "normal", "broken", "slow"."""
    if mode not in ("normal", "broken", "slow"):
        raise ValueError(f"mode must be normal, broken or slow, got {mode!r}")
    system, user = sample.messages
    if mode == "normal":
        return [system, user], [CALCULATOR_TOOL]
    user = {"role": "user", "content": f"{mode}: {user['content']}"}
    return [system, user], [CALCULATOR_TOOL, PYTHON_TOOL] if mode == "slow" else [CALCULATOR_TOOL]


def _conversation(sample: TinyTaskSample, mode: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    messages, tools = prompt_messages(sample, mode)
    if mode == "normal":
        return demonstration(sample), tools
    if mode == "broken":
        text = _BROKEN_CALL.format(expr=sample.calls[0]["arguments"]["expression"])
        error = parse_tool_calls(text).errors[0].message
        return messages + [
            {"role": "assistant", "content": text},
            {"role": "tool", "content": f"Error: {error}"},
            {"role": "assistant", "content": "The answer is unknown."},
        ], tools
    code = f"import time; time.sleep({SLOW_SECONDS}); print({sample.answer})"
    call = {"type": "function", "function": {"name": "python", "arguments": {"code": code}}}
    return messages + [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": f"{sample.answer}\n"},
        {"role": "assistant", "content": f"The answer is {sample.answer}."},
    ], tools


def finetune(
    out_dir: str | Path, *, num_steps: int = 150, batch_size: int = 4, lr: float = 3e-3, seed: int = 0
) -> Path:
    """Fine-tune tiny-qwen3 into `out_dir` (a complete HF folder) and return it."""
    base = tiny_model_dir("tiny-qwen3")
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        rng = random.Random(seed)
        examples = []
        for index, sample in enumerate(make_tiny_task(seed, 256, kinds=("arithmetic",))):
            mode = ("normal", "normal", "normal", "broken", "slow")[index % 5]
            messages, tools = _conversation(sample, mode)
            examples.append(tokenize_for_sft(tokenizer, messages, tools))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / 10) * max(0.1, 1 - step / num_steps)
        )
        model.train()
        for _ in range(num_steps):
            batch = collate(
                rng.sample(examples, batch_size),
                pad_id=tokenizer.pad_token_id or 0,
                micro_batch_size=batch_size,
            )[0]
            logits = model(input_ids=batch["tokens"]).logits.float()  # [B, S, V]
            logprobs = torch.log_softmax(logits, -1).gather(-1, batch["labels"][..., None])[..., 0]
            loss = -(logprobs * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
    out = Path(out_dir)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_tool_caller_dir(num_steps: int = 150) -> Path:
    """The cached fine-tuned tiny tool caller (trained on first use, about a minute on one core)."""
    key = cache_key(
        version=VERSION,
        base=str(tiny_model_dir("tiny-qwen3").name),
        num_steps=num_steps,
        slow=SLOW_SECONDS,
        torch=torch.__version__,
        transformers=transformers.__version__,
    )
    return cached_dir(f"tiny-tool-caller-{key}", lambda tmp: finetune(tmp, num_steps=num_steps))
