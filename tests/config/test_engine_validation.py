"""Engine / weight-sync combinations that cannot work are refused at load, naming the alternative."""

from __future__ import annotations

from pathlib import Path

import pytest

from rest_megatron.config import load_config
from rest_megatron.config.errors import ConfigError
from rest_megatron.rollout.server_commands import vllm_server_args

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml"


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        (
            ["rollout.engine=sglang", "rollout.weight_sync=distributed", "launch.device=cpu"],
            "rollout.weight_sync=disk",
        ),
        (
            ["rollout.engine=vllm", "rollout.vllm={logprobs_mode: raw_logprobs}"],
            "rollout.vllm.logprobs_mode is set by the launcher",
        ),
        (["rollout.engine=vllm", "rollout.vllm={worker_extension_cls: x}"], "the weight-update extension"),
        (["rollout.engine=vllm", "rollout.vllm={tensor_parallel_size: 2}"], "rollout.server_tp"),
        (["rollout.vllm={enforce_eager: true}"], "set rollout.engine=vllm"),
        (["rollout.max_failed_fraction=1.5"], "[0, 1]"),
    ],
)
def test_combinations_that_cannot_work_are_refused(overrides: list[str], fix: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(TINY, overrides)
    assert fix in str(refused.value)


def test_vllm_servers_for_training_report_tempered_logprobs_and_take_weight_updates() -> None:
    config = load_config(
        TINY,
        [
            "rollout.engine=vllm",
            "rollout.vllm={enforce_eager: true}",
            "rollout.server_urls=[http://127.0.0.1:9]",
        ],
    )
    args = vllm_server_args(config.rollout, dtype=config.model.dtype)
    assert args[args.index("--logprobs-mode") + 1] == "processed_logprobs"
    assert (
        args[args.index("--worker-extension-cls") + 1]
        == "rest_megatron.rollout.vllm_worker.WeightUpdateExtension"
    )
    assert "--enforce-eager" in args and args.count("--logprobs-mode") == 1
