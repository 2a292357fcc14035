"""Semantic checks of a `Config`: what the type annotations cannot say.

Ranges, combinations that cannot run, the parallel layout against the model's shape (read from the
model's config.json) and the world size, batch divisibility, and files that must exist. All problems
found are reported together, one line each, every line naming its full dotted key and the fix.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rest_megatron.config.errors import ConfigError
from rest_megatron.config.schema import TINY_DATASETS, TINY_MODELS, Config, RolloutConfig

# (dotted key, smallest allowed value) for plain lower bounds.
_AT_LEAST_ONE = (
    "model.padded_vocab_multiple", "parallel.tp", "parallel.pp", "parallel.micro_batch_size",
    "rollout.num_servers", "rollout.server_tp", "rollout.num_samples_per_prompt", "rollout.max_new_tokens",
    "rollout.max_turns", "data.num_prompts_per_step", "data.max_prompt_tokens", "data.max_response_tokens",
    "optimizer.num_steps", "optimizer.ppo_epochs", "logging.log_interval", "sandbox.memory_mb",
    "sandbox.max_processes", "sandbox.max_file_mb", "sandbox.max_output_bytes", "sandbox.max_concurrency",
    "launch.nnodes", "launch.nproc_per_node",
)  # fmt: skip
_NON_NEGATIVE = (
    "parallel.dp", "algorithm.clip_high", "algorithm.kl_coef", "algorithm.entropy_coef", "optimizer.min_lr",
    "optimizer.num_warmup_steps", "optimizer.weight_decay", "optimizer.clip_grad",
    "checkpoint.save_interval", "checkpoint.num_keep_last", "logging.eval_interval",
)  # fmt: skip
_POSITIVE = (
    "rollout.temperature", "rollout.request_timeout_s", "optimizer.lr", "optimizer.adam_eps",
    "sandbox.cpu_seconds", "sandbox.wall_seconds", "launch.collective_timeout_s",
)  # fmt: skip


def validate(
    config: Config,
    world_size: int | None = None,
    *,
    model_config: Mapping[str, Any] | None = None,
    require_paths: bool = True,
) -> None:
    """Raise `ConfigError` listing every problem in `config`; return None when it can run.

    Args:
        config: a type-checked config (from `load_config` / `config_from_dict`).
        world_size: the trainer's real world size if known; default `launch.nnodes × nproc_per_node`.
        model_config: the model's Hugging Face config when the caller already has it (`plan` knows the
            shape of models the user has not downloaded yet); default: read `model.path`.
        require_paths: False skips the checks that data files and the resume checkpoint exist, for
            commands that only reason about a recipe (`plan`). Training keeps them: a missing download
            should fail before a job starts its servers.
    """
    errors: list[str] = []
    errors += _check_ranges(config)
    errors += _check_combinations(config)
    errors += _check_registered(config)
    if require_paths:
        errors += _check_files(config)
    if not errors:  # the layout checks divide by tp/pp and read the model; only run them on sane values
        errors += _check_model_layout(config, model_config)
        errors += _check_world_and_batches(config, config.world_size if world_size is None else world_size)
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError(f"{len(errors)} config errors:\n" + "\n".join(f"  - {e}" for e in errors))


def get_key(config: Config, key: str) -> Any:
    """The value at a dotted key, e.g. `get_key(config, "parallel.tp")`."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_ranges(config: Config) -> list[str]:
    errors = []
    for key in _AT_LEAST_ONE:
        if get_key(config, key) < 1:
            errors.append(f"{key} must be >= 1, got {get_key(config, key)}")
    for key in _NON_NEGATIVE:
        if get_key(config, key) < 0:
            errors.append(f"{key} must be >= 0, got {get_key(config, key)}")
    for key in _POSITIVE:
        if get_key(config, key) <= 0:
            errors.append(f"{key} must be > 0, got {get_key(config, key)}")
    a, o, r = config.algorithm, config.optimizer, config.rollout
    if not 0 <= a.clip_low < 1:
        errors.append(
            f"algorithm.clip_low must be in [0, 1) (the ratio floor is 1 - clip_low), got {a.clip_low}"
        )
    if a.dual_clip is not None and a.dual_clip <= 1:
        errors.append(f"algorithm.dual_clip must be > 1 or null (disabled), got {a.dual_clip}")
    if not 0 < r.top_p <= 1:
        errors.append(f"rollout.top_p must be in (0, 1], got {r.top_p}")
    if r.top_k != -1 and r.top_k < 1:
        errors.append(f"rollout.top_k must be -1 (off) or >= 1, got {r.top_k}")
    for key, beta in (("optimizer.adam_beta1", o.adam_beta1), ("optimizer.adam_beta2", o.adam_beta2)):
        if not 0 <= beta < 1:
            errors.append(f"{key} must be in [0, 1), got {beta}")
    if o.mini_batch_size is not None and o.mini_batch_size < 1:
        errors.append(
            f"optimizer.mini_batch_size must be >= 1 or null (whole rollout batch), got {o.mini_batch_size}"
        )
    return errors


def _check_registered(config: Config) -> list[str]:
    """Names that must be registered, and keyword parameters their functions accept, so a typo fails
    at load time and not at the first scoring step, after the SFT warm start."""
    from rest_megatron.algo.advantages import advantage_names
    from rest_megatron.algo.aggregation import aggregation_names
    from rest_megatron.algo.policy_loss import kl_estimator_names, policy_loss_names
    from rest_megatron.algo.rewards import get_reward, reward_names
    from rest_megatron.algo.weights import get_token_weights, token_weight_names

    a = config.algorithm
    errors = [
        f"{key}={name!r} is not registered; choose one of {', '.join(names)}"
        for key, name, names in (
            ("algorithm.policy_loss", a.policy_loss, policy_loss_names()),
            ("algorithm.kl_estimator", a.kl_estimator, kl_estimator_names()),
            ("algorithm.aggregation", a.aggregation, aggregation_names()),
            ("algorithm.advantage", a.advantage, advantage_names()),
        )
        if name not in names
    ]
    for key, name, names, get, params_key, params, passed in (
        (
            "reward.name",
            config.reward.name,
            reward_names(),
            get_reward,
            "reward.params",
            config.reward.params,
            {"response", "ground_truth", "step", "tools"},
        ),
        (
            "algorithm.weights",
            config.algorithm.weights,
            token_weight_names(),
            get_token_weights,
            "algorithm.weights_params",
            config.algorithm.weights_params,
            {"loss_mask", "region_mask", "step", "collision", "entropy"},
        ),
    ):
        if name not in names:
            errors.append(f"{key}={name!r} is not registered; choose one of {', '.join(sorted(names))}")
            continue
        signature = inspect.signature(get(name))
        if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            continue
        accepted = sorted(set(signature.parameters) - passed)
        for unknown in sorted(set(params) - set(accepted)):
            errors.append(
                f"{params_key} has {unknown!r}, which {key}={name} does not take; it takes: "
                f"{', '.join(accepted) or 'nothing'} (write a mapping as {{key: value}}, with a space)"
            )
    return errors


def _check_server_flags(rollout: RolloutConfig) -> list[str]:
    """What the servers' command lines would refuse (launcher-owned flags), and the sampling settings
    under which the server's log-probs cannot equal the trainer's (`rollout/server_commands.py` docstring)."""
    from rest_megatron.rollout.server_commands import server_command

    errors = []
    if rollout.deterministic and rollout.engine == "vllm":
        errors.append(
            "rollout.deterministic=true is implemented for sglang (--enable-deterministic-inference) and the "
            "embedded engine (always deterministic), not vllm; set rollout.deterministic=false or use "
            "rollout.engine=sglang"
        )
    if rollout.share_trainer_gpus and (rollout.server_urls or rollout.engine == "embedded"):
        errors.append(
            "rollout.share_trainer_gpus places the GPU servers the trainer starts itself; with "
            "rollout.server_urls set or rollout.engine=embedded it would do nothing: set it to false"
        )
    try:
        server_command(rollout, "MODEL", port=0)
    except ValueError as err:
        errors.append(str(err))
    return errors


def _check_combinations(config: Config) -> list[str]:
    errors = []
    p, r, launch = config.parallel, config.rollout, config.launch
    if p.pack_sequences and config.algorithm.aggregation not in ("token-mean-weighted", "token-mean"):
        errors.append(
            f"parallel.pack_sequences puts several trajectories in one row, which the per-row aggregation "
            f"algorithm.aggregation={config.algorithm.aggregation} would mix; use token-mean-weighted or "
            "token-mean, or set parallel.pack_sequences=false"
        )
    if p.sequence_parallel and p.tp == 1:
        errors.append(
            "parallel.sequence_parallel needs parallel.tp > 1; set parallel.sequence_parallel=false"
        )
    if p.sequence_parallel and launch.device == "cpu":
        errors.append(
            "parallel.sequence_parallel does not run on CPU (the local layer spec refuses it); "
            "set parallel.sequence_parallel=false or launch.device=cuda"
        )
    if config.model.transformer_impl == "transformer_engine" and launch.device == "cpu":
        errors.append(
            "model.transformer_impl=transformer_engine needs CUDA but launch.device=cpu; "
            "set model.transformer_impl=local (or auto)"
        )
    if launch.backend == "nccl" and launch.device == "cpu":
        errors.append(
            "launch.backend=nccl needs CUDA but launch.device=cpu; set launch.backend=gloo (or auto)"
        )
    if r.num_samples_per_prompt == 1:  # 0 is reported by the range checks
        errors.append(
            f"rollout.num_samples_per_prompt must be >= 2 for advantage '{config.algorithm.advantage}' "
            "(a group of one sample has zero advantage); set it to e.g. 8"
        )
    if config.algorithm.kl_coef > 0 and config.sft.num_steps > 0:
        errors.append(
            "algorithm.kl_coef > 0 anchors the policy to the weights of model.path, which sft.num_steps > 0 "
            "would leave behind before RL starts; run the SFT warm start on its own and point model.path at "
            "its Hugging Face export (with sft.num_steps=0), or set algorithm.kl_coef=0"
        )
    if r.engine == "sglang" and r.weight_sync == "distributed" and launch.device == "cpu":
        errors.append(
            f"rollout.weight_sync={r.weight_sync} with rollout.engine=sglang broadcasts over NCCL, "
            "which needs launch.device=cuda; set rollout.weight_sync=disk, or train on CPU with "
            "rollout.engine=embedded"
        )
    if r.engine != "vllm" and (r.vllm or r.vllm_python):
        errors.append(
            f"rollout.vllm / rollout.vllm_python configure vLLM servers but rollout.engine={r.engine}; "
            "drop them or set rollout.engine=vllm"
        )
    if not 0 <= r.max_failed_fraction <= 1:
        errors.append(f"rollout.max_failed_fraction must be in [0, 1], got {r.max_failed_fraction}")
    if r.weight_sync_bucket_mb <= 0:
        errors.append(f"rollout.weight_sync_bucket_mb must be > 0, got {r.weight_sync_bucket_mb}")
    if r.engine == "embedded" and r.server_tp != 1:
        errors.append("rollout.server_tp must be 1 with rollout.engine=embedded (one process per server)")
    errors += _check_server_flags(r)
    if r.max_new_tokens > config.data.max_response_tokens:
        errors.append(
            f"rollout.max_new_tokens ({r.max_new_tokens}) exceeds data.max_response_tokens "
            f"({config.data.max_response_tokens}); lower it or raise data.max_response_tokens"
        )
    if config.optimizer.min_lr > config.optimizer.lr:
        errors.append(
            f"optimizer.min_lr ({config.optimizer.min_lr}) exceeds optimizer.lr ({config.optimizer.lr})"
        )
    return errors


def _prepare_hint(config: Config, path: Path) -> str:
    """How to make a missing data file: the `data prepare` command that writes it."""
    split = (
        f" --split test=0.02 --seed {config.data.seed}" if path.name in ("train.jsonl", "test.jsonl") else ""
    )
    return (
        f"make it with `rest-megatron data prepare --format FORMAT --in SOURCE --out {path.parent}{split}` "
        f"(see `rest-megatron data prepare --help`), or give an existing JSONL file or the built-in "
        + " / ".join(repr(name) for name in TINY_DATASETS)
    )


def _check_files(config: Config) -> list[str]:
    errors = []
    for key in ("data.train_path", "data.eval_path"):
        path = get_key(config, key)
        if path is not None and path not in TINY_DATASETS and not Path(path).is_file():
            errors.append(f"{key} '{path}' not found; {_prepare_hint(config, Path(path))}")
    resume = config.checkpoint.resume
    if resume not in ("auto", "never") and not Path(resume).exists():
        errors.append(f"checkpoint.resume '{resume}' not found; give a checkpoint path, 'auto' or 'never'")
    return errors


def read_model_config(path: str) -> dict[str, Any]:
    """The Hugging Face config of `model.path`: its config.json, or the built-in tiny model's."""
    if path in TINY_MODELS:
        try:
            # Imported lazily: assets is a separate module that ships the tiny model definitions.
            from rest_megatron.assets import tiny_hf_config
        except ModuleNotFoundError as err:
            if err.name not in ("rest_megatron.assets", "rest_megatron"):
                raise
            raise ConfigError(
                f"model.path '{path}' is a built-in tiny model, but rest_megatron.assets is not in this "
                "build; point model.path at a Hugging Face model directory"
            ) from None
        return tiny_hf_config(path)
    directory = Path(path)
    names = ", ".join(TINY_MODELS)
    if not directory.is_dir():
        raise ConfigError(
            f"model.path '{path}' is not a directory; give a local Hugging Face model directory with "
            f"config.json (e.g. from `huggingface-cli download`) or a built-in tiny model ({names})"
        )
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"model.path '{path}' has no config.json; point it at a Hugging Face model directory "
            f"(the folder holding config.json) or a built-in tiny model ({names})"
        )
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"model.path: {config_file} is not valid JSON ({err}); re-download the model"
        ) from None


def layout_errors(
    hf: Mapping[str, Any], *, tp: int, pp: int, tp_key: str = "parallel.tp", pp_key: str = "parallel.pp"
) -> list[str]:
    """Why TP×PP cannot split the model whose HF config is `hf` (empty when it can)."""
    heads, layers = hf["num_attention_heads"], hf["num_hidden_layers"]
    groups = hf.get("num_key_value_heads") or heads
    errors = []
    if heads % tp:
        errors.append(
            f"{tp_key}={tp} does not divide the model's {heads} attention heads; "
            f"choose {tp_key} from {_divisors(heads)}"
        )
    if groups % tp:
        errors.append(
            f"{tp_key}={tp} does not divide the model's {groups} query groups (num_key_value_heads); "
            f"choose {tp_key} from {_divisors(groups)}"
        )
    if layers % pp:
        errors.append(
            f"{pp_key}={pp} does not divide the model's {layers} layers; "
            f"choose {pp_key} from {_divisors(layers)}"
        )
    return errors


def _check_model_layout(config: Config, model_config: Mapping[str, Any] | None = None) -> list[str]:
    try:
        hf = read_model_config(config.model.path) if model_config is None else model_config
    except ConfigError as err:
        return [str(err)]
    missing = [k for k in ("num_attention_heads", "num_hidden_layers") if not isinstance(hf.get(k), int)]
    if missing:
        return [
            f"model.path '{config.model.path}': config.json lacks {', '.join(missing)}; "
            "rest-megatron supports Qwen2/Qwen2.5, Qwen3 and Llama 3 configs"
        ]
    errors = layout_errors(hf, tp=config.parallel.tp, pp=config.parallel.pp)
    max_positions = hf.get("max_position_embeddings")
    total = config.data.max_prompt_tokens + config.data.max_response_tokens
    if isinstance(max_positions, int) and total > max_positions:
        errors.append(
            f"data.max_prompt_tokens + data.max_response_tokens = {total} exceeds the model's "
            f"max_position_embeddings ({max_positions}); lower them"
        )
    return errors


def _check_world_and_batches(config: Config, world_size: int) -> list[str]:
    p = config.parallel
    model_parallel = p.tp * p.pp
    ranks = "launch.nnodes × launch.nproc_per_node"
    if p.dp and model_parallel * p.dp != world_size:
        return [
            f"world size {world_size} != parallel.tp ({p.tp}) × parallel.pp ({p.pp}) × parallel.dp ({p.dp}) "
            f"= {model_parallel * p.dp}; set parallel.dp=0 to derive it, or launch {model_parallel * p.dp} "
            f"ranks ({ranks})"
        ]
    if world_size % model_parallel:
        return [
            f"world size {world_size} is not divisible by parallel.tp × parallel.pp = {model_parallel}; "
            f"launch a multiple of {model_parallel} ranks ({ranks}) or change parallel.tp / parallel.pp"
        ]
    dp = config.data_parallel_size(world_size)
    batch = config.rollout_batch_size
    batch_key = "data.num_prompts_per_step × rollout.num_samples_per_prompt"
    mini = config.optimizer.mini_batch_size
    if mini is not None and batch % mini:
        return [f"optimizer.mini_batch_size ({mini}) must divide the rollout batch {batch_key} = {batch}"]
    step = p.micro_batch_size * dp
    if (mini or batch) % step:
        key = "optimizer.mini_batch_size" if mini is not None else f"the rollout batch {batch_key}"
        return [
            f"{key} = {mini or batch} must be a multiple of parallel.micro_batch_size × data-parallel size "
            f"= {p.micro_batch_size} × {dp} = {step}; change parallel.micro_batch_size or the batch"
        ]
    updates = config.num_updates_per_step * config.optimizer.num_steps
    if config.optimizer.num_warmup_steps > updates:
        return [
            f"optimizer.num_warmup_steps ({config.optimizer.num_warmup_steps}) exceeds the run's {updates} "
            "optimizer updates; lower it"
        ]
    return []


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
