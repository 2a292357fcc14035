"""Server management: SGLang command building, and start / health wait / timeout / log tail / stop."""

from __future__ import annotations

import os
import sys

import httpx
import pytest

from rest_megatron.assets import tiny_model_dir
from rest_megatron.rollout.launch import (
    ServerProcess,
    ServerStartError,
    embedded_command,
    free_port,
    passthrough_flags,
    sglang_command,
    start_embedded_servers,
)


def test_sglang_command_from_config_values() -> None:
    cmd = sglang_command("/models/qwen3", port=30001, tp=2, mem_fraction_static=0.7, tool_call_parser="qwen25",
                         extra={"context_length": 8192, "enable_metrics": True, "disable_radix_cache": False,
                                "cuda_graph_bs": [1, 2, 4], "json_model_override_args": {"a": 1}, "chunked_prefill_size": None},
                         python="python3")
    assert cmd[:12] == ["python3", "-m", "sglang.launch_server", "--model-path", "/models/qwen3", "--host", "127.0.0.1",
                        "--port", "30001", "--tp-size", "2", "--context-length"]
    flags = cmd[11:]
    assert flags == ["--context-length", "8192", "--enable-metrics", "--cuda-graph-bs", "1", "2", "4",
                     "--json-model-override-args", '{"a": 1}', "--mem-fraction-static", "0.7",
                     "--tool-call-parser", "qwen25"]


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
    assert cmd == ["py", "-m", "rest_megatron.rollout.embedded_server", "--model", "/m", "--host", "127.0.0.1",
                   "--port", "0", "--port-file", "/tmp/p", "--max-running-requests", "8"]


def test_a_server_that_exits_reports_its_status_and_log_tail(tmp_path) -> None:
    script = "import sys; print('loading model'); print('error: unknown flag --frobnicate', file=sys.stderr); sys.exit(3)"
    server = ServerProcess([sys.executable, "-c", script], base_url=f"http://127.0.0.1:{free_port()}",
                           log_path=tmp_path / "s.log")
    server.start()
    with pytest.raises(ServerStartError, match=r"(?s)status 3.*unknown flag --frobnicate"):
        server.wait_healthy(timeout_s=30)


def test_a_server_that_never_gets_healthy_times_out_with_its_log_and_is_stopped(tmp_path) -> None:
    script = "import time; print('still loading weights', flush=True); time.sleep(120)"
    server = ServerProcess([sys.executable, "-c", script], base_url=f"http://127.0.0.1:{free_port()}",
                           log_path=tmp_path / "s.log")
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
