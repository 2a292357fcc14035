"""Every recipe under recipes/ loads and validates, and the shipped variants differ as their names say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rest_megatron.config import TINY_MODELS, load_config, read_recipe
from tests.config.conftest import write_model_dir

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
HAVE_ASSETS = importlib.util.find_spec("rest_megatron.assets") is not None


def _overrides(recipe: Path, tmp_path: Path) -> list[str]:
    """Until rest_megatron.assets exists, stand in a model dir shaped like the tiny models."""
    if HAVE_ASSETS or read_recipe(recipe)["model"]["path"] not in TINY_MODELS:
        return []
    return [
        f"model.path={write_model_dir(tmp_path / 'tiny', heads=4, kv_heads=2, layers=4, max_positions=4096)}"
    ]


def test_the_shipped_recipes_are_found() -> None:
    assert {p.name for p in RECIPES} >= {"tiny-cpu.yaml", "tiny-cpu-grpo.yaml", "tiny-cpu-tp2.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_validates(recipe: Path, tmp_path: Path) -> None:
    config = load_config(recipe, _overrides(recipe, tmp_path))
    assert config.logging.run_dir.startswith(f"runs/{recipe.stem}-")


def test_tiny_variants_change_only_what_they_say(tmp_path: Path) -> None:
    by_name = {p.stem: p for p in RECIPES}
    rest = load_config(by_name["tiny-cpu"], _overrides(by_name["tiny-cpu"], tmp_path))
    grpo = load_config(by_name["tiny-cpu-grpo"], _overrides(by_name["tiny-cpu-grpo"], tmp_path))
    tp2 = load_config(by_name["tiny-cpu-tp2"], _overrides(by_name["tiny-cpu-tp2"], tmp_path))
    assert (rest.algorithm.weights, grpo.algorithm.weights) == ("paper", "uniform")
    assert rest.model.path == "tiny-qwen3" and rest.rollout.engine == "embedded"
    assert (tp2.parallel.tp, tp2.world_size, tp2.data_parallel_size()) == (2, 2, 1)
    assert grpo.optimizer == rest.optimizer and tp2.algorithm == rest.algorithm
