"""Fixtures for the config tests: a Hugging Face-style model directory and a minimal recipe on disk."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


def write_model_dir(
    root: Path, *, heads: int = 8, kv_heads: int = 2, layers: int = 4, max_positions: int = 8192
) -> Path:
    """A directory holding just the config.json fields validation reads (a Qwen3-shaped layout)."""
    root.mkdir(parents=True, exist_ok=True)
    hf = {
        "architectures": ["Qwen3ForCausalLM"],
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "num_hidden_layers": layers,
        "max_position_embeddings": max_positions,
    }
    (root / "config.json").write_text(json.dumps(hf))
    return root


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model_dir(tmp_path / "model")


@pytest.fixture
def write_recipe(tmp_path: Path, model_dir: Path) -> Callable[..., Path]:
    """Write a recipe; `{model}` in the text is replaced by the fixture model directory."""

    def write(text: str | None = None, name: str = "recipe.yaml") -> Path:
        if text is None:
            text = """
                model: {path: "{model}"}
                data: {train_path: tiny-task, num_prompts_per_step: 4,
                       max_prompt_tokens: 256, max_response_tokens: 256}
                optimizer: {num_steps: 3}
                rollout: {num_samples_per_prompt: 4, max_new_tokens: 64}
            """
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("{model}", str(model_dir)))
        return path

    return write
