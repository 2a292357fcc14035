"""Server processes: start / health wait / timeout / log tail / stop, and GPU placement beside the trainer."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import httpx
import pytest

from rest_megatron.assets import tiny_model_dir
from rest_megatron.config import RolloutConfig
from rest_megatron.rollout.launch import (
    ServerProcess,
    ServerStartError,
    free_port,
    gpu_placement,
    start_embedded_servers,
    start_sglang_servers,
)


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
