"""Server management: SGLang command building, and start / health wait / timeout / log tail / stop."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from rest_megatron.assets import tiny_model_dir
from rest_megatron.cli import main as cli_main
from rest_megatron.config import ConfigError, RolloutConfig, load_config
from rest_megatron.rollout.clients.vllm import WORKER_EXTENSION
from rest_megatron.rollout.launch import (
    ServerProcess,
    ServerStartError,
    embedded_command,
    free_port,
    gpu_placement,
    passthrough_flags,
    server_command,
    sglang_command,
    start_embedded_servers,
    start_sglang_servers,
    vllm_logprobs_mode,
    vllm_server_args,
)

TINY_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml"


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


def test_a_server_that_exits_reports_its_status_and_log_tail(tmp_path) -> None:
    script = (
        "import sys; print('loading model'); "
        "print('error: unknown flag --frobnicate', file=sys.stderr); sys.exit(3)"
    )
    server = ServerProcess(
        [sys.executable, "-c", script],
        base_url=f"http://127.0.0.1:{free_port()}",
        log_path=tmp_path / "s.log",
    )
    server.start()
    with pytest.raises(ServerStartError, match=r"(?s)status 3.*unknown flag --frobnicate"):
        server.wait_healthy(timeout_s=30)


def test_a_server_that_never_gets_healthy_times_out_with_its_log_and_is_stopped(tmp_path) -> None:
    script = "import time; print('still loading weights', flush=True); time.sleep(120)"
    server = ServerProcess(
        [sys.executable, "-c", script],
        base_url=f"http://127.0.0.1:{free_port()}",
        log_path=tmp_path / "s.log",
    )
    server.start()
    with pytest.raises(ServerStartError, match=r"(?s)within 1\.5 s.*still loading weights"):
        server.wait_healthy(timeout_s=1.5)
    assert not server.alive


def test_embedded_servers_start_answer_and_stop(tmp_path) -> None:
    servers = start_embedded_servers(tiny_model_dir("tiny-qwen3"), 1, log_dir=tmp_path, timeout_s=120)
    server = servers[0]
    try:
        assert httpx.get(f"{server.base_url}/health", timeout=5, trust_env=False).status_code == 200
        pid = server.process.pid
    finally:
        server.stop()
    assert not server.alive
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone


# ---- recipe -> server command line (shared with slurm/train.sbatch through `serve-command`) ----


def _rollout(**fields) -> RolloutConfig:
    return RolloutConfig(**fields)


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


# ---- one node without Slurm: the trainer's GPUs first, the servers on the rest ----


@pytest.mark.parametrize(
    ("visible", "count", "trainer", "servers", "tp", "want_trainer", "want_servers"),
    [
        (None, 8, 4, 4, 1, ["0", "1", "2", "3"], ["4", "5", "6", "7"]),  # the README's 8-GPU node
        (None, 8, 4, 2, 2, ["0", "1", "2", "3"], ["4,5", "6,7"]),
        ("2,5,6,7", 0, 2, 2, 1, ["2", "5"], ["6", "7"]),  # non-contiguous ids keep their order
        ("7, 3,1,0", 0, 1, 1, 3, ["7"], ["3,1,0"]),
        ("GPU-aa,GPU-bb", 0, 0, 2, 1, [], ["GPU-aa", "GPU-bb"]),  # UUIDs; no trainer GPU (eval)
    ],
)
def test_gpu_placement(visible, count, trainer, servers, tp, want_trainer, want_servers) -> None:
    assert gpu_placement(
        visible, device_count=count, trainer_gpus=trainer, num_servers=servers, server_tp=tp
    ) == (want_trainer, want_servers)


def test_gpu_placement_refuses_what_does_not_fit() -> None:
    with pytest.raises(
        ValueError,
        match=r"4 trainer GPU\(s\) \+ rollout.num_servers=4 × rollout.server_tp=2 = 12 "
        r"GPUs, but this node has 8 .*lower launch.nproc_per_node",
    ):
        gpu_placement(None, device_count=8, trainer_gpus=4, num_servers=4, server_tp=2)
    with pytest.raises(ValueError, match=r"has 2 \(CUDA_VISIBLE_DEVICES=2,5\)"):
        gpu_placement("2,5", device_count=8, trainer_gpus=2, num_servers=1, server_tp=1)
    with pytest.raises(ValueError, match=r"has 0 \(CUDA_VISIBLE_DEVICES=\)"):
        gpu_placement("", device_count=8, trainer_gpus=0, num_servers=1, server_tp=1)


FAKE_SGLANG = """import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
argv = sys.argv[1:]
seen = {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "raw_logprob_env": os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB"),
        "argv": argv}
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer((argv[argv.index("--host") + 1], int(argv[argv.index("--port") + 1])), Handler).serve_forever()
"""


def test_trainer_launched_servers_take_the_gpus_after_the_trainers(tmp_path) -> None:
    """A stand-in `sglang.launch_server` (SGLang needs a GPU) reports the GPUs and flags it was given."""
    (tmp_path / "sglang").mkdir()
    (tmp_path / "sglang" / "__init__.py").write_text("")
    (tmp_path / "sglang" / "launch_server.py").write_text(FAKE_SGLANG)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "CUDA_VISIBLE_DEVICES": "2,5,6,7",
        "SGLANG_RETURN_ORIGINAL_LOGPROB": "1",
    }
    rollout = RolloutConfig(engine="sglang", num_servers=2, server_tp=1, deterministic=True)
    servers = start_sglang_servers(
        "/models/m", rollout, log_dir=tmp_path / "logs", env=env, trainer_gpus=2, timeout_s=60
    )
    try:
        seen = [httpx.get(f"{s.base_url}/info", timeout=5, trust_env=False).json() for s in servers]
    finally:
        for server in servers:
            server.stop()
    assert [s["cuda"] for s in seen] == ["6", "7"]  # torchrun's two ranks hold 2 and 5
    assert all(s["raw_logprob_env"] is None and "--enable-deterministic-inference" in s["argv"] for s in seen)
    with pytest.raises(ValueError, match="= 5 GPUs, but this node has 4"):
        start_sglang_servers("/m", replace(rollout, num_servers=3), log_dir=tmp_path, env=env, trainer_gpus=2)


def test_one_gpu_machines_share_the_trainers_gpu_when_asked() -> None:
    with pytest.raises(ValueError, match="rollout.share_trainer_gpus=true"):
        gpu_placement("3", device_count=0, trainer_gpus=1, num_servers=1, server_tp=1)
    assert gpu_placement("3", device_count=0, trainer_gpus=1, num_servers=1, server_tp=1, share=True) == (
        ["3"],
        ["3"],
    )
    assert gpu_placement(None, device_count=4, trainer_gpus=4, num_servers=2, server_tp=2, share=True) == (
        ["0", "1", "2", "3"],
        ["0,1", "2,3"],
    )
    with pytest.raises(ValueError, match=r"\(shared\) .* = 6 GPUs"):
        gpu_placement(None, device_count=4, trainer_gpus=4, num_servers=3, server_tp=2, share=True)
