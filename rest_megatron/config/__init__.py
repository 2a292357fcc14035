"""Run configuration: typed recipe schema, YAML loading with overrides, validation.

    from rest_megatron.config import load_config
    config = load_config("recipes/tiny-cpu.yaml", ["algorithm.weights=entropy", "parallel.tp=2"])

- `schema.py`: the frozen dataclasses (one group per concern, a docstring under every field).
- `loading.py`: recipe files (`base:` inheritance), `key=value` overrides, dict ⇄ dataclass, save.
- `validation.py`: ranges, combinations, model shape vs. parallel layout, world size, files.
"""

from rest_megatron.config.errors import ConfigError
from rest_megatron.config.loading import (
    RESOLVED_CONFIG_NAME,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    read_recipe,
    resolve,
    save_config,
)
from rest_megatron.config.schema import (
    TINY_DATASETS,
    TINY_MODELS,
    AlgorithmConfig,
    CheckpointConfig,
    Config,
    DataConfig,
    LaunchConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    ParallelConfig,
    RewardConfig,
    RolloutConfig,
    SandboxConfig,
    SFTConfig,
)
from rest_megatron.config.validation import read_model_config, validate

__all__ = [
    "RESOLVED_CONFIG_NAME",
    "TINY_DATASETS",
    "TINY_MODELS",
    "AlgorithmConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LaunchConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "SFTConfig",
    "RewardConfig",
    "RolloutConfig",
    "SandboxConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "read_model_config",
    "read_recipe",
    "resolve",
    "save_config",
    "validate",
]
