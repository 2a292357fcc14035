"""Recipe loading: overrides and their types, `base:` inheritance, key/type errors, save round trip."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from rest_megatron.config import (
    RESOLVED_CONFIG_NAME,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from rest_megatron.config.loading import apply_overrides, deep_merge, parse_value

WriteRecipe = Callable[..., Path]


def test_overrides_are_parsed_as_yaml_and_converted_to_the_field_type(write_recipe: WriteRecipe) -> None:
    config = load_config(
        write_recipe(),
        [
            "algorithm.weights=entropy",
            "parallel.tp=2",
            "launch.nproc_per_node=2",
            "algorithm.dynamic_sampling=true",
            "optimizer.lr=1e-5",  # YAML 1.1 would read this as a string
            "algorithm.clip_high=1",  # int accepted for a float field, stored as float
            "algorithm.dual_clip=null",
            "rollout.server_urls=[http://a:1, http://b:2]",
            "rollout.sglang.mem_fraction_static=0.7",
            "model.megatron={attention_dropout: 0.0}",
            "logging.wandb_project=2024-01-01",  # stays a string, not a date
        ],
    )
    assert config.algorithm.weights == "entropy"
    assert config.parallel.tp == 2
    assert config.algorithm.dynamic_sampling is True
    assert config.optimizer.lr == 1e-5
    assert config.algorithm.clip_high == 1.0 and isinstance(config.algorithm.clip_high, float)
    assert config.algorithm.dual_clip is None
    assert config.rollout.server_urls == ("http://a:1", "http://b:2")
    assert config.rollout.sglang == {"mem_fraction_static": 0.7}
    assert config.model.megatron == {"attention_dropout": 0.0}
    assert config.logging.wandb_project == "2024-01-01"


def test_parse_value_follows_yaml_scalars() -> None:
    assert parse_value("2") == 2
    assert parse_value("true") is True
    assert parse_value("[1,2]") == [1, 2]
    assert parse_value("3e-4") == pytest.approx(3e-4)
    assert parse_value("") is None
    assert parse_value("tiny-qwen3") == "tiny-qwen3"


def test_base_recipes_deep_merge_relative_to_their_own_directory(write_recipe: WriteRecipe) -> None:
    write_recipe(name="parents/base.yaml")
    write_recipe(
        """
        base: base.yaml
        algorithm: {weights: uniform}
        rollout: {temperature: 0.7}
        """,
        name="parents/mid.yaml",
    )
    child = write_recipe("base: ../parents/mid.yaml\nrollout: {top_p: 0.9}\n", name="child/child.yaml")
    config = load_config(child)
    assert config.algorithm.weights == "uniform"
    # rollout merged key by key across three files
    assert (config.rollout.num_samples_per_prompt, config.rollout.temperature, config.rollout.top_p) == (
        4,
        0.7,
        0.9,
    )
    assert config.optimizer.num_steps == 3


def test_deep_merge_replaces_lists_and_scalars_but_merges_mappings() -> None:
    merged = deep_merge({"a": {"x": 1, "y": [1, 2]}, "b": 1}, {"a": {"y": [3]}, "b": {"z": 2}})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": {"z": 2}}


def test_base_cycle_and_missing_base_are_reported(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    write_recipe("base: b.yaml\n", name="a.yaml")
    write_recipe("base: a.yaml\n", name="b.yaml")
    with pytest.raises(ConfigError, match=r"'base' chain loops: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    orphan = write_recipe("base: nowhere.yaml\n", name="orphan.yaml")
    with pytest.raises(
        ConfigError, match=r"recipe not found: .*nowhere\.yaml \(named by 'base' in .*orphan\.yaml\)"
    ):
        load_config(orphan)


def test_missing_recipe_and_non_mapping_recipe(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"recipe not found: .*absent\.yaml; pass the path of a YAML recipe"
    ):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"must be a mapping of keys .*got list"):
        load_config(write_recipe("- 1\n- 2\n", name="list.yaml"))
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        load_config(write_recipe("model: {path: [\n", name="broken.yaml"))


def test_unknown_key_suggests_the_closest_valid_key(write_recipe: WriteRecipe) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_recipe(), ["algorithm.weigths=entropy"])
    assert str(err.value) == "unknown key 'algorithm.weigths'; did you mean 'algorithm.weights'?"


def test_unknown_key_in_the_wrong_group_points_to_the_right_group(write_recipe: WriteRecipe) -> None:
    with pytest.raises(ConfigError, match=r"^unknown key 'tp'; did you mean 'parallel.tp'\?$"):
        load_config(write_recipe(), ["tp=2"])


def test_unknown_key_without_a_close_match_lists_the_group(write_recipe: WriteRecipe) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'sandbox.zzz'; valid keys in 'sandbox' are: url, secret_env, backend"
    ):
        load_config(write_recipe(), ["sandbox.zzz=1"])


def test_wrong_type_names_key_expected_type_and_value(write_recipe: WriteRecipe) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_recipe(), ["parallel.tp=two"])
    assert str(err.value) == "parallel.tp must be int, got str 'two'"
    with pytest.raises(ConfigError, match=r"^rollout.max_turns must be int, got bool True$"):
        load_config(write_recipe(), ["rollout.max_turns=true"])
    with pytest.raises(ConfigError, match=r"^optimizer.mini_batch_size must be int or null, got float 1.5$"):
        load_config(write_recipe(), ["optimizer.mini_batch_size=1.5"])
    with pytest.raises(ConfigError, match=r"^rollout.server_urls\[1\] must be str, got int 3$"):
        load_config(write_recipe(), ["rollout.server_urls=[a, 3]"])
    with pytest.raises(ConfigError, match=r"^'parallel' must be a mapping of keys, got int 3$"):
        load_config(write_recipe(), ["parallel=3"])


def test_bad_enum_value_lists_the_allowed_values(write_recipe: WriteRecipe) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_recipe(), ["model.dtype=fp8"])
    assert str(err.value) == "model.dtype must be one of 'float32', 'bfloat16', 'float16'; got 'fp8'"
    with pytest.raises(ConfigError, match=r"launch.backend must be one of 'auto', 'gloo', 'nccl'; got 'mpi'"):
        load_config(write_recipe(), ["launch.backend=mpi"])


def test_missing_required_key(write_recipe: WriteRecipe) -> None:
    recipe = write_recipe("model: {path: x}\ndata: {train_path: tiny-task}\n")
    with pytest.raises(
        ConfigError, match=r"missing required key 'optimizer.num_steps'; set it in the recipe"
    ):
        load_config(recipe)


def test_malformed_overrides(write_recipe: WriteRecipe) -> None:
    with pytest.raises(ConfigError, match=r"override 'parallel.tp' must look like key=value"):
        load_config(write_recipe(), ["parallel.tp"])
    with pytest.raises(
        ConfigError, match=r"cannot parse the value of override 'rollout.sglang=\[1,' as YAML"
    ):
        load_config(write_recipe(), ["rollout.sglang=[1,"])
    with pytest.raises(
        ConfigError, match=r"cannot set 'optimizer.num_steps.x': 'optimizer.num_steps' is a value"
    ):
        apply_overrides({"optimizer": {"num_steps": 3}}, ["optimizer.num_steps.x=1"])


def test_run_dir_template_and_checkpoint_dir_are_resolved(write_recipe: WriteRecipe) -> None:
    now = datetime(2025, 1, 2, 3, 4, 5)
    config = load_config(write_recipe(name="my-recipe.yaml"), now=now)
    assert config.logging.run_dir == "runs/my-recipe-20250102-030405"
    assert config.checkpoint.dir == "runs/my-recipe-20250102-030405/checkpoints"
    pinned = load_config(write_recipe(), ["logging.run_dir=/scratch/x", "checkpoint.dir=/ckpt"])
    assert (pinned.logging.run_dir, pinned.checkpoint.dir) == ("/scratch/x", "/ckpt")
    with pytest.raises(ConfigError, match=r"logging.run_dir 'runs/\{name\}' has a bad placeholder"):
        load_config(write_recipe(), ["logging.run_dir=runs/{name}"])


def test_save_config_round_trips_through_load_config(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    config = load_config(
        write_recipe(),
        ["rollout.sglang={mem_fraction_static: 0.7, chunked_prefill_size: 4096}", "optimizer.lr=3e-6"],
    )
    path = save_config(config, tmp_path / "run")
    assert path == tmp_path / "run" / RESOLVED_CONFIG_NAME
    assert yaml.safe_load(path.read_text())["optimizer"]["lr"] == 3e-6
    assert load_config(path) == config
    assert config_from_dict(config_to_dict(config)) == config


def test_config_to_dict_is_plain_yaml_data(write_recipe: WriteRecipe) -> None:
    data = config_to_dict(load_config(write_recipe(), ["rollout.server_urls=[http://x:1]"]))
    assert data["rollout"]["server_urls"] == ["http://x:1"]
    yaml.safe_dump(data)  # raises on tuples or other non-plain types


def test_overrides_must_be_a_sequence_not_one_string(write_recipe: WriteRecipe) -> None:
    with pytest.raises(TypeError, match=r"overrides must be a sequence of 'key=value' strings"):
        load_config(write_recipe(), "parallel.tp=2")  # type: ignore[arg-type]
