"""Recipe -> server command lines: SGLang, vLLM (the log-probs mode that matches the trainer) and the
embedded engine, launcher-owned flags, and `rest-megatron serve-command` (what slurm/train.sbatch runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rest_megatron.cli import main as cli_main
from rest_megatron.config import ConfigError, RolloutConfig, load_config
from rest_megatron.rollout.clients.vllm import WORKER_EXTENSION
from rest_megatron.rollout.server_commands import (
    embedded_command,
    passthrough_flags,
    server_command,
    sglang_command,
    vllm_logprobs_mode,
    vllm_server_args,
)

TINY_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml"


def _rollout(**fields) -> RolloutConfig:
    return RolloutConfig(**fields)


def test_sglang_command_from_config_values() -> None:
    cmd = sglang_command(
        "/models/qwen3",
        port=30001,
        tp=2,
        mem_fraction_static=0.7,
        tool_call_parser="qwen25",
        extra={
            "context_length": 8192,
            "enable_metrics": True,
            "disable_radix_cache": False,
            "cuda_graph_bs": [1, 2, 4],
            "json_model_override_args": {"a": 1},
            "chunked_prefill_size": None,
        },
        python="python3",
    )
    assert cmd[:12] == [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/qwen3",
        "--host",
        "127.0.0.1",
        "--port",
        "30001",
        "--tp-size",
        "2",
        "--context-length",
    ]
    flags = cmd[11:]
    assert flags == [
        "--context-length",
        "8192",
        "--enable-metrics",
        "--cuda-graph-bs",
        "1",
        "2",
        "4",
        "--json-model-override-args",
        '{"a": 1}',
        "--mem-fraction-static",
        "0.7",
        "--tool-call-parser",
        "qwen25",
    ]


def test_launcher_owned_and_conflicting_flags_are_refused() -> None:
    with pytest.raises(ValueError, match="rollout.server_tp"):
        sglang_command("m", port=1, extra={"tp_size": 4})
    with pytest.raises(ValueError, match="given twice"):
        sglang_command("m", port=1, mem_fraction_static=0.5, extra={"mem_fraction_static": 0.8})
    with pytest.raises(ValueError, match=">= 1"):
        sglang_command("m", port=1, tp=0)
    assert passthrough_flags({"mem-fraction-static": 0.5}) == ["--mem-fraction-static", "0.5"]


def test_embedded_command() -> None:
    cmd = embedded_command("/m", port_file="/tmp/p", extra={"max_running_requests": 8}, python="py")
    assert cmd == [
        "py",
        "-m",
        "rest_megatron.rollout.embedded_server",
        "--model",
        "/m",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        "/tmp/p",
        "--max-running-requests",
        "8",
    ]


def test_sglang_server_command_carries_the_recipe() -> None:
    rollout = _rollout(
        engine="sglang",
        server_tp=2,
        deterministic=True,
        sglang={"mem_fraction_static": 0.85, "context_length": 4096},
    )
    cmd = server_command(rollout, "/models/q", port=30010, host="10.1.2.3", python="py")
    assert cmd == [
        "env",
        "-u",
        "SGLANG_RETURN_ORIGINAL_LOGPROB",
        "py",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/q",
        "--host",
        "10.1.2.3",
        "--port",
        "30010",
        "--tp-size",
        "2",
        "--mem-fraction-static",
        "0.85",
        "--context-length",
        "4096",
        "--enable-deterministic-inference",
    ]
    assert "--enable-deterministic-inference" not in server_command(_rollout(engine="sglang"), "m", port=1)
    with pytest.raises(ValueError, match="rollout.deterministic"):
        server_command(
            _rollout(engine="sglang", sglang={"enable_deterministic_inference": True}), "m", port=1
        )


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k", "mode"),
    [
        (0.7, 1.0, -1, "processed_logprobs"),  # tempered, nothing filtered: processed == log softmax(z / T)
        (1.0, 1.0, -1, "processed_logprobs"),
        (1.0, 0.9, -1, "raw_logprobs"),  # processed would be renormalized over the nucleus
        (1.0, 1.0, 20, "raw_logprobs"),
    ],
)
def test_vllm_logprobs_mode_matches_the_trainer(
    temperature: float, top_p: float, top_k: int, mode: str
) -> None:
    assert vllm_logprobs_mode(temperature, top_p, top_k) == mode
    rollout = _rollout(
        engine="vllm",
        server_tp=4,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        vllm={"gpu_memory_utilization": 0.8},
    )
    assert vllm_server_args(rollout) == [
        "--tensor-parallel-size",
        "4",
        "--logprobs-mode",
        mode,
        "--worker-extension-cls",
        WORKER_EXTENSION,
        "--gpu-memory-utilization",
        "0.8",
    ]
    assert server_command(rollout, "/m", port=7, python="py")[:11] == [
        "env",
        "VLLM_SERVER_DEV_MODE=1",
        "py",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/m",
        "--host",
        "127.0.0.1",
        "--port",
        "7",
    ]


def test_vllm_combinations_that_cannot_agree_are_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"rollout.temperature=1, or rollout.top_p=1 and rollout.top_k=-1, or use rollout.engine=sglang",
    ):
        vllm_logprobs_mode(0.8, 0.95, -1)
    with pytest.raises(ValueError, match="rollout.vllm.logprobs_mode is set by the launcher"):
        vllm_server_args(_rollout(engine="vllm", vllm={"logprobs_mode": "raw_logprobs"}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["rollout.engine=vllm", "rollout.top_p=0.9"],
            "rollout.engine=vllm cannot report the trainer's log-probs",
        ),
        (
            ["rollout.engine=vllm", "rollout.temperature=1.0", "rollout.deterministic=true"],
            "rollout.deterministic=false",
        ),
        (["rollout.engine=sglang", "rollout.sglang={tp_size: 2}"], "use rollout.server_tp instead"),
        (
            ["rollout.engine=sglang", "rollout.share_trainer_gpus=true", "rollout.server_urls=[http://h:1]"],
            "rollout.share_trainer_gpus .* set it to false",
        ),
    ],
)
def test_config_load_refuses_servers_that_cannot_match_the_trainer(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_RECIPE, overrides)
    # the tiny recipe samples at 0.8 without top-p: vLLM with processed log-probs, SGLang and replay are fine
    for ok in (["rollout.engine=vllm"], ["rollout.engine=sglang", "rollout.deterministic=true"]):
        load_config(TINY_RECIPE, ok)


def test_serve_command_prints_what_the_trainer_would_launch(capsys) -> None:
    assert (
        cli_main(
            [
                "serve-command",
                str(TINY_RECIPE),
                "rollout.engine=sglang",
                "rollout.deterministic=true",
                "rollout.sglang={mem_fraction_static: 0.5}",
                "--host",
                "10.0.0.2",
                "--port",
                "30020",
                "--model",
                "/m",
                "--null",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.split("\0")[:-1]
    config = load_config(
        TINY_RECIPE,
        ["rollout.engine=sglang", "rollout.deterministic=true", "rollout.sglang={mem_fraction_static: 0.5}"],
    )
    assert printed == server_command(config.rollout, "/m", port=30020, host="10.0.0.2", python="python")
    assert cli_main(["serve-command", "--engine", "vllm", "--port", "1"]) == 2
    assert "give --model" in capsys.readouterr().err
