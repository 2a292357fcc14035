"""Semantic validation: model shape vs. parallel layout, world size, batches, files, ranges."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from rest_megatron.algo.advantages import advantage_names
from rest_megatron.algo.aggregation import aggregation_names
from rest_megatron.algo.policy_loss import kl_estimator_names, policy_loss_names
from rest_megatron.algo.weights import token_weight_names
from rest_megatron.config import TINY_MODELS, ConfigError, load_config, read_model_config, validate
from tests.config.conftest import write_model_dir

WriteRecipe = Callable[..., Path]
HAVE_ASSETS = importlib.util.find_spec("rest_megatron.assets") is not None


def _error(recipe: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(recipe, list(overrides))
    return str(err.value)


def test_tp_must_divide_the_attention_heads(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    model = write_model_dir(tmp_path / "m6", heads=6, kv_heads=6)
    message = _error(write_recipe(), f"model.path={model}", "parallel.tp=4", "launch.nproc_per_node=4")
    assert (
        "parallel.tp=4 does not divide the model's 6 attention heads; choose parallel.tp from 1, 2, 3, 6"
        in message
    )


def test_tp_must_divide_the_query_groups(write_recipe: WriteRecipe) -> None:
    # the fixture model has 8 heads in 2 KV groups: tp=4 splits heads but not groups
    message = _error(write_recipe(), "parallel.tp=4", "launch.nproc_per_node=4")
    assert message == (
        "parallel.tp=4 does not divide the model's 2 query groups (num_key_value_heads); "
        "choose parallel.tp from 1, 2"
    )


def test_pp_must_divide_the_layers(write_recipe: WriteRecipe) -> None:
    message = _error(write_recipe(), "parallel.pp=3", "launch.nproc_per_node=3")
    assert message == "parallel.pp=3 does not divide the model's 4 layers; choose parallel.pp from 1, 2, 4"


def test_world_size_must_equal_tp_pp_dp(write_recipe: WriteRecipe) -> None:
    message = _error(write_recipe(), "parallel.tp=2", "parallel.dp=2", "launch.nproc_per_node=2")
    assert message.startswith("world size 2 != parallel.tp (2) × parallel.pp (1) × parallel.dp (2) = 4;")
    assert "set parallel.dp=0 to derive it" in message


def test_world_size_must_be_divisible_by_the_model_parallel_size(write_recipe: WriteRecipe) -> None:
    message = _error(write_recipe(), "parallel.tp=2", "launch.nproc_per_node=3")
    assert message.startswith("world size 3 is not divisible by parallel.tp × parallel.pp = 2;")


def test_explicit_world_size_wins_over_the_launch_section(write_recipe: WriteRecipe) -> None:
    config = load_config(write_recipe(), ["parallel.tp=2"], world_size=4)  # e.g. WORLD_SIZE under torchrun
    assert config.data_parallel_size(4) == 2
    with pytest.raises(ConfigError, match=r"^world size 1 is not divisible"):
        validate(config)  # launch.nproc_per_node is still 1


def test_missing_model_files(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    message = _error(write_recipe(), f"model.path={tmp_path / 'empty'}")
    assert message.startswith(
        f"model.path '{tmp_path / 'empty'}' has no config.json; point it at a Hugging Face"
    )
    message = _error(write_recipe(), "model.path=Qwen/Qwen3-4B")
    assert message.startswith(
        "model.path 'Qwen/Qwen3-4B' is not a directory; give a local Hugging Face model"
    )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}")
    assert "config.json lacks num_attention_heads, num_hidden_layers" in _error(
        write_recipe(), f"model.path={tmp_path / 'bad'}"
    )


def test_missing_data_files(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    message = _error(write_recipe(), "data.train_path=no/such.jsonl")
    assert message == (
        "data.train_path 'no/such.jsonl' not found; make it with `rest-megatron data prepare --format FORMAT "
        "--in SOURCE --out no` (see `rest-megatron data prepare --help`), or give an existing JSONL file "
        "or the built-in 'tiny-task'"
    )
    assert "data.eval_path 'gone.jsonl' not found" in _error(write_recipe(), "data.eval_path=gone.jsonl")
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "hi"}\n')
    assert load_config(write_recipe(), [f"data.train_path={train}"]).data.train_path == str(train)


def test_all_problems_are_reported_together(write_recipe: WriteRecipe) -> None:
    message = _error(write_recipe(), "parallel.tp=0", "rollout.top_p=1.5", "data.train_path=nope.jsonl")
    assert message.splitlines() == [
        "3 config errors:",
        "  - parallel.tp must be >= 1, got 0",
        "  - rollout.top_p must be in (0, 1], got 1.5",
        "  - data.train_path 'nope.jsonl' not found; make it with `rest-megatron data prepare "
        "--format FORMAT --in SOURCE --out .` (see `rest-megatron data prepare --help`), or give an "
        "existing JSONL file or the built-in 'tiny-task'",
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["rollout.num_samples_per_prompt=1"],
            "rollout.num_samples_per_prompt must be >= 2 for advantage 'grpo'",
        ),
        (["parallel.sequence_parallel=true"], "parallel.sequence_parallel needs parallel.tp > 1"),
        (["reward.name=tool_trajectroy"], "reward.name='tool_trajectroy' is not registered; choose one of"),
        (["reward.params={format_weight:1.0}"], "reward.params has 'format_weight:1.0', which reward.name="),
        (["algorithm.weights_params={gama_name: 2}"], "algorithm.weights_params has 'gama_name'"),
        (
            ["algorithm.weights=hybrid", "algorithm.weights_params={gama_name: 2}"],
            "algorithm.weights_params has 'gama_name', which algorithm.weights=hybrid does not take; "
            "it takes: "
            "alpha, averaging, clip_max, clip_min, eps, gamma_answer, gamma_args, gamma_format, gamma_name",
        ),
        (
            ["parallel.pack_sequences=true", "algorithm.aggregation=seq-mean-token-mean"],
            "parallel.pack_sequences puts several trajectories in one row",
        ),
        (
            [
                "parallel.sequence_parallel=true",
                "parallel.tp=2",
                "launch.device=cpu",
                "launch.nproc_per_node=2",
            ],
            "parallel.sequence_parallel does not run on CPU",
        ),
        (
            ["launch.backend=nccl", "launch.device=cpu"],
            "launch.backend=nccl needs CUDA but launch.device=cpu",
        ),
        (["rollout.server_tp=2"], "rollout.server_tp must be 1 with rollout.engine=embedded"),
        (
            ["rollout.max_new_tokens=512"],
            "rollout.max_new_tokens (512) exceeds data.max_response_tokens (256)",
        ),
        (["optimizer.min_lr=1.0"], "optimizer.min_lr (1.0) exceeds optimizer.lr (1e-06)"),
        (["algorithm.dual_clip=0.5"], "algorithm.dual_clip must be > 1 or null"),
        (["algorithm.clip_low=1.0"], "algorithm.clip_low must be in [0, 1)"),
        (["rollout.top_k=0"], "rollout.top_k must be -1 (off) or >= 1, got 0"),
        (["checkpoint.resume=/no/ckpt"], "checkpoint.resume '/no/ckpt' not found"),
        (["rollout.temperature=0"], "rollout.temperature must be > 0, got 0.0"),
        (["optimizer.mini_batch_size=3"], "optimizer.mini_batch_size (3) must divide the rollout batch"),
        (["optimizer.ppo_epochs=0"], "optimizer.ppo_epochs must be >= 1, got 0"),
        (
            ["algorithm.kl_coef=0.1", "sft.num_steps=5"],
            "algorithm.kl_coef > 0 anchors the policy to the weights",
        ),
        (
            ["parallel.micro_batch_size=3"],
            "the rollout batch data.num_prompts_per_step × rollout.num_samples_per_prompt = 16 "
            "must be a multiple of parallel.micro_batch_size × data-parallel size = 3 × 1 = 3",
        ),
        (
            ["optimizer.num_warmup_steps=10"],
            "optimizer.num_warmup_steps (10) exceeds the run's 3 optimizer updates",
        ),
        (["data.max_prompt_tokens=8000"], "exceeds the model's max_position_embeddings (8192)"),
    ],
)
def test_combinations_that_cannot_run(write_recipe: WriteRecipe, overrides: list[str], expected: str) -> None:
    assert expected in _error(write_recipe(), *overrides)


@pytest.mark.parametrize(
    ("key", "names"),
    [
        ("algorithm.weights", token_weight_names),
        ("algorithm.policy_loss", policy_loss_names),
        ("algorithm.kl_estimator", kl_estimator_names),
        ("algorithm.aggregation", aggregation_names),
        ("algorithm.advantage", advantage_names),
    ],
)
def test_registry_backed_names_are_checked_against_the_registry(
    write_recipe: WriteRecipe, key: str, names: Callable[[], list[str]]
) -> None:
    """The schema keeps no copy of the names: every registered one loads, a typo lists them all."""
    for name in names():
        assert getattr(load_config(write_recipe(), [f"{key}={name}"]).algorithm, key.split(".")[1]) == name
    assert _error(write_recipe(), f"{key}=typo") == (
        f"{key}='typo' is not registered; choose one of {', '.join(names())}"
    )


def test_hybrid_takes_paper_and_entropy_parameters(write_recipe: WriteRecipe) -> None:
    config = load_config(
        write_recipe(), ["algorithm.weights=hybrid", "algorithm.weights_params={gamma_name: 2, alpha: 0.5}"]
    )
    assert config.algorithm.weights_params == {"gamma_name": 2, "alpha": 0.5}


def test_a_valid_layout_passes(write_recipe: WriteRecipe) -> None:
    config = load_config(
        write_recipe(),
        [
            "parallel.tp=2",
            "parallel.pp=2",
            "launch.nnodes=2",
            "launch.nproc_per_node=4",
            "optimizer.mini_batch_size=8",
        ],
    )
    assert (config.data_parallel_size(), config.num_updates_per_step) == (2, 2)
    validate(dataclasses.replace(config, parallel=dataclasses.replace(config.parallel, dp=2)))


@pytest.mark.skipif(not HAVE_ASSETS, reason="rest_megatron.assets is not in this build yet")
@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_models_are_read_from_assets(name: str, write_recipe: WriteRecipe) -> None:
    hf = read_model_config(name)
    assert hf["num_attention_heads"] > 0 and hf["num_hidden_layers"] > 0
    assert load_config(write_recipe(), [f"model.path={name}"]).model.path == name


@pytest.mark.skipif(HAVE_ASSETS, reason="rest_megatron.assets exists; the tiny names resolve")
def test_tiny_models_without_assets_say_so(write_recipe: WriteRecipe) -> None:
    assert "is a built-in tiny model, but rest_megatron.assets is not in this build" in _error(
        write_recipe(), "model.path=tiny-qwen3"
    )
