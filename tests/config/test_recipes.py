"""Every recipe under recipes/ loads and validates, and the shipped variants differ as their names say.

The real-model recipes name models and data the test machine does not have (`models/Qwen3-8B`,
`data/toolrl_4k/train.jsonl`). They are checked twice: strictly, as `train` loads them, with stand-ins
for the files (a config.json with the model's real shape from the plan table, a one-line JSONL); and
with no files at all, as `plan` loads them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rest_megatron.algo.rewards import reward_names
from rest_megatron.config import TINY_MODELS, ConfigError, config_to_dict, load_config, read_recipe
from rest_megatron.plan.architectures import known_model_config
from rest_megatron.plan.main import load_for_plan
from rest_megatron.plan.planner import rollout_gpus
from tests.config.conftest import write_model_dir

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
REAL = [p for p in RECIPES if not p.name.startswith("tiny-")]
HAVE_ASSETS = importlib.util.find_spec("rest_megatron.assets") is not None
MODELS = ("qwen3-1.7b", "qwen3-4b-instruct-2507", "qwen3-8b", "llama-3.2-3b-instruct")


def _overrides(recipe: Path, tmp_path: Path) -> list[str]:
    """Stand-ins for the files a recipe names that this machine lacks (never weights)."""
    data = read_recipe(recipe)
    path = data["model"]["path"]
    if path in TINY_MODELS:
        if HAVE_ASSETS:
            return []
        model = write_model_dir(tmp_path / "tiny", heads=4, kv_heads=2, layers=4, max_positions=4096)
        return [f"model.path={model}"]
    known = known_model_config(path)
    assert known is not None, f"{recipe.name}: model.path {path} is not in the plan table"
    model = tmp_path / Path(path).name
    model.mkdir()
    (model / "config.json").write_text(json.dumps(known[1]))
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "ground_truth": {}}) + "\n")
    return [f"model.path={model}", f"data.train_path={train}", f"data.eval_path={train}"]


def test_the_shipped_recipes_are_found() -> None:
    names = {p.name for p in RECIPES}
    assert names >= {"tiny-cpu.yaml", "tiny-cpu-grpo.yaml", "tiny-cpu-tp2.yaml"}
    assert names >= {f"{m}-{method}.yaml" for m in MODELS for method in ("rest", "grpo")}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_validates(recipe: Path, tmp_path: Path) -> None:
    config = load_config(recipe, _overrides(recipe, tmp_path))
    assert config.logging.run_dir.startswith(f"runs/{recipe.stem}-")


@pytest.mark.parametrize("recipe", REAL, ids=lambda p: p.name)
def test_real_recipe_validates_without_model_or_data(recipe: Path) -> None:
    config, hf, source, _ = load_for_plan(str(recipe), [])
    assert not Path(config.model.path).exists() and source.startswith("built-in table")
    # What `data prepare --split test=0.02` writes, and the authors' step count (train_ResT.sh: 15 × 7).
    assert (config.data.train_path, config.data.eval_path) == (
        "data/toolrl_4k/train.jsonl",
        "data/toolrl_4k/test.jsonl",
    )
    assert config.optimizer.num_steps == 105 and config.logging.eval_interval == 15
    assert config.algorithm.weights_params == {"step_origin": 1}
    assert config.reward.params == {"accept_arguments": False, "step_origin": 1}
    assert hf["num_attention_heads"] % config.parallel.tp == 0


def test_train_demands_the_files_plan_does_not(tmp_path: Path) -> None:
    recipe = next(p for p in REAL if p.stem == "qwen3-1.7b-rest")
    # What `train` and the Slurm script's pre-flight see: the download is checked before a job starts.
    with pytest.raises(
        ConfigError, match="data.train_path 'data/toolrl_4k/train.jsonl' not found"
    ) as missing:
        load_config(recipe)
    # The error gives the command that writes the file (and the test split beside it).
    assert (
        "rest-megatron data prepare --format FORMAT --in SOURCE --out data/toolrl_4k --split test=0.02 "
        "--seed 1234"
    ) in str(missing.value)
    train = tmp_path / "train.jsonl"
    train.write_text("{}\n")
    with pytest.raises(ConfigError, match="model.path 'models/Qwen3-1.7B' is not a directory"):
        load_config(recipe, [f"data.train_path={train}", f"data.eval_path={train}"])
    # Without the files everything else is still checked, against the model's real shape.
    with pytest.raises(ConfigError, match="parallel.tp=3 does not divide the model's 16 attention heads"):
        load_for_plan(str(recipe), ["parallel.tp=3"])
    with pytest.raises(ConfigError, match="optimizer.mini_batch_size .* must be a multiple of"):
        load_for_plan(str(recipe), ["parallel.micro_batch_size=3"])


@pytest.mark.parametrize("recipe", REAL, ids=lambda p: p.name)
def test_real_recipe_keeps_the_paper_setting_on_one_8_gpu_node(recipe: Path) -> None:
    config, _, _, _ = load_for_plan(str(recipe), [])
    a, r, d, o = config.algorithm, config.rollout, config.data, config.optimizer
    assert (a.advantage, a.clip_low, a.clip_high, a.dual_clip, a.kl_coef) == ("grpo", 0.2, 0.2, 3.0, 0.0)
    assert a.weights == ("uniform" if recipe.stem.endswith("-grpo") else "paper")
    assert (r.engine, r.num_samples_per_prompt, d.num_prompts_per_step) == ("sglang", 4, 512)
    assert (o.lr, o.mini_batch_size, config.num_updates_per_step) == (1e-6, 64 * 4, 8)
    assert (d.max_prompt_tokens, d.max_response_tokens, config.model.dtype) == (2048, 2048, "bfloat16")
    assert config.reward.name == "toolrl" and "toolrl" in reward_names()
    assert (config.launch.nnodes, config.world_size + rollout_gpus(config)) == (1, 8)


@pytest.mark.parametrize("model", MODELS)
def test_grpo_twins_change_only_the_weights(model: str) -> None:
    by_name = {p.stem: p for p in RECIPES}
    rest = config_to_dict(load_for_plan(str(by_name[f"{model}-rest"]), [])[0])
    grpo = config_to_dict(load_for_plan(str(by_name[f"{model}-grpo"]), [])[0])
    assert (rest["algorithm"].pop("weights"), grpo["algorithm"].pop("weights")) == ("paper", "uniform")
    for run in (rest, grpo):
        run.pop("logging"), run.pop("checkpoint")  # the run directory names the recipe
    assert rest == grpo


def test_tiny_variants_change_only_what_they_say(tmp_path: Path) -> None:
    by_name = {p.stem: p for p in RECIPES}
    rest = load_config(by_name["tiny-cpu"], _overrides(by_name["tiny-cpu"], tmp_path))
    grpo = load_config(by_name["tiny-cpu-grpo"], _overrides(by_name["tiny-cpu-grpo"], tmp_path))
    tp2 = load_config(by_name["tiny-cpu-tp2"], _overrides(by_name["tiny-cpu-tp2"], tmp_path))
    assert (rest.algorithm.weights, grpo.algorithm.weights) == ("paper", "uniform")
    assert rest.model.path == "tiny-qwen3" and rest.rollout.engine == "embedded"
    assert (tp2.parallel.tp, tp2.world_size, tp2.data_parallel_size()) == (2, 2, 1)
    assert grpo.optimizer == rest.optimizer and tp2.algorithm == rest.algorithm
