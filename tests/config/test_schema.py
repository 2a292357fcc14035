"""Contract tests of the config schema: docstrings, frozen/keyword-only groups, required fields."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing

import pytest

from rest_megatron.config import schema
from rest_megatron.config.schema import Config, DataConfig, ModelConfig, OptimizerConfig, ParallelConfig

GROUPS = [
    obj
    for obj in vars(schema).values()
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == schema.__name__
]


def _config(**parallel: int) -> Config:
    return Config(
        model=ModelConfig(path="tiny-qwen3"),
        data=DataConfig(train_path="tiny-task", num_prompts_per_step=4),
        optimizer=OptimizerConfig(num_steps=2, mini_batch_size=8),
        parallel=ParallelConfig(**parallel),
    )


def test_every_group_is_reachable_from_config() -> None:
    group_types = set(typing.get_type_hints(Config).values())
    assert set(GROUPS) == group_types | {Config}


@pytest.mark.parametrize("cls", GROUPS, ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls: type) -> None:
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    documented = set()
    for stmt, after in zip(body, body[1:]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
        ):
            if isinstance(after.value.value, str) and after.value.value.strip():
                documented.add(stmt.target.id)
    assert {f.name for f in dataclasses.fields(cls)} - documented == set()


@pytest.mark.parametrize("cls", GROUPS, ids=lambda c: c.__name__)
def test_groups_are_frozen_and_keyword_only(cls: type) -> None:
    params = dataclasses.fields(cls)
    assert cls.__dataclass_params__.frozen
    assert all(f.kw_only for f in params)


def test_required_fields_are_exactly_the_ones_without_a_sane_default() -> None:
    required = {
        f"{group}.{f.name}"
        for group, group_type in typing.get_type_hints(Config).items()
        for f in dataclasses.fields(group_type)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == {"model.path", "data.train_path", "optimizer.num_steps"}


def test_config_cannot_be_mutated() -> None:
    config = _config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.parallel.tp = 2  # type: ignore[misc]


def test_derived_sizes() -> None:
    config = _config(tp=2, pp=2)
    assert config.rollout_batch_size == 4 * 8  # num_prompts_per_step × default group size
    assert config.num_updates_per_step == 4  # 32 trajectories / mini-batch 8
    assert config.data_parallel_size(world_size=8) == 2
    assert _config(tp=2, dp=3).data_parallel_size(world_size=100) == 3
