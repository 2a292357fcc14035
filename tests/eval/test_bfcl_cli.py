"""`rest-megatron eval bfcl` end to end on the random-init tiny Qwen3, through real embedded engines.

The tiny model calls nothing sensible, so scores are low; what is checked is the pipeline: the server
started and stopped by the command (or an existing one), prompts with tool schemas, generation, the
verdicts with their reasons, the table and the JSON report. Replies are capped at 64 tokens to keep the
run short (a random model otherwise writes until `--max-new-tokens`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import transformers

from rest_megatron import cli
from rest_megatron.assets import tiny_model_dir
from rest_megatron.eval.bfcl_data import load_category
from rest_megatron.eval.bfcl_env import parse_call_string
from rest_megatron.eval.bfcl_run import BfclRunner, RunSettings, prompting_messages
from rest_megatron.eval.serving import check_engine, detect_engine
from rest_megatron.rollout.chat import template_renders_tools
from rest_megatron.rollout.clients import make_client
from rest_megatron.rollout.launch import ServerProcess, start_embedded_servers
from rest_megatron.rollout.types import SamplingParams, ServerUnavailable
from tests.eval.conftest import needs_bfcl

pytestmark = needs_bfcl


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return tiny_model_dir("tiny-qwen3")


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    servers = start_embedded_servers(
        tiny_dir,
        1,
        log_dir=tmp_path_factory.mktemp("engine"),
        extra={"seed": 0, "num_threads": 1},
        timeout_s=180,
    )
    yield servers[0]
    servers[0].stop()


def test_eval_bfcl_starts_the_engine_and_writes_a_report(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports" / "bfcl.json"
    code = cli.main(
        [
            "eval",
            "bfcl",
            "--model",
            str(tiny_dir),
            "--categories",
            "simple,irrelevance",
            "--limit",
            "3",
            "--out",
            str(out),
            "--max-new-tokens",
            "64",
            "--log-dir",
            str(tmp_path / "logs"),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "bfcl" and list(report["categories"]) == ["simple", "irrelevance"]
    for name, category in report["categories"].items():
        entries = category["entries"]
        assert category["total"] == len(entries) == 3
        assert category["correct"] == sum(e["correct"] for e in entries)
        assert category["accuracy"] == pytest.approx(category["correct"] / 3)
        assert [e["id"] for e in entries] == [
            f"{'simple_python' if name == 'simple' else name}_{i}" for i in range(3)
        ]
        for entry in entries:
            assert isinstance(entry["output"], str) and entry["output"]
            assert (entry["reason"] is None) == entry["correct"]
    assert report["overall"]["total"] == 6
    scores = report["bfcl_scores"]  # BFCL's aggregation: only non-live simple and irrelevance ran
    simple, irrelevance = (report["categories"][c]["accuracy"] for c in ("simple", "irrelevance"))
    assert scores["overall"]["accuracy"] == pytest.approx(
        0.1 * (simple / 3) / 4 + 0.1 * irrelevance / 2, abs=1e-12
    )
    assert scores["live"]["display_accuracy"] == 0 and scores["simple_ast"]["display_accuracy"] == "N/A"
    assert report["meta"]["bfcl_eval_version"] == "2026.3.23" and report["meta"]["mode"] == "fc"
    assert report["meta"]["model"] == str(tiny_dir) and report["meta"]["sampling"]["max_new_tokens"] == 64
    captured = capsys.readouterr()
    assert "simple" in captured.out and "irrelevance" in captured.out and "all entries" in captured.out
    assert "Overall Acc" in captured.out and "Agentic Acc" in captured.out and "N/A" in captured.out
    assert "bfcl simple: 3/3 done" in captured.err  # progress
    # The engine the command started is gone: its log says it served, and the port it used is closed.
    assert "embedded engine serving" in (tmp_path / "logs" / "embedded-0.log").read_text()
    port = (tmp_path / "logs" / "embedded-0.port").read_text().strip()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0, trust_env=False)


def test_eval_bfcl_uses_a_running_server_and_its_reported_model(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "bfcl.json"
    code = cli.main(
        [
            "eval",
            "bfcl",
            "--server",
            server.base_url,
            "--categories",
            "live_relevance",
            "--limit",
            "2",
            "--max-new-tokens",
            "16",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert (
        report["meta"]["server"] == server.base_url and report["categories"]["live_relevance"]["total"] == 2
    )
    assert server.alive  # a server the command did not start is left running


def test_server_engine_is_detected_and_a_mismatch_names_the_flag(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        detect_engine(server.base_url) == "sglang" and check_engine(server.base_url, "embedded") == "embedded"
    )
    argv = [
        "eval",
        "bfcl",
        "--server",
        server.base_url,
        "--categories",
        "simple",
        "--limit",
        "1",
        "--out",
        str(tmp_path / "r.json"),
    ]
    assert cli.main([*argv, "--engine", "vllm"]) == 2  # was: every request 404, scored 0% with exit 0
    assert "pass --engine sglang" in capsys.readouterr().err and not (tmp_path / "r.json").exists()
    with pytest.raises(ServerUnavailable, match="no server answers"):
        detect_engine("http://127.0.0.1:9")
    assert (
        cli.main(
            [
                "eval",
                "bfcl",
                "--server",
                "http://127.0.0.1:9",
                "--model",
                "tiny-qwen3",
                "--categories",
                "simple",
                "--limit",
                "1",
            ]
        )
        == 1
    )


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An SGLang-protocol server that refuses every generation with HTTP 400 (as vLLM-style 404s were)."""

    model_path = ""

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._send(200, {"model_path": self.model_path} if self.path == "/get_model_info" else {})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(400, {"error": "refused for the test"})

    def log_message(self, *args: Any) -> None:
        pass


def test_a_refused_request_ends_the_run_unscored(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _Refusing.model_path = str(tiny_dir)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "r.json"
        code = cli.main(
            [
                "eval",
                "bfcl",
                "--server",
                f"http://127.0.0.1:{httpd.server_port}",
                "--categories",
                "simple",
                "--limit",
                "2",
                "--out",
                str(out),
            ]
        )
    finally:
        httpd.shutdown()
    assert (
        code == 1 and not out.exists()
    )  # was: each entry failed with its HTTP error, scored as a wrong answer
    assert "nothing was scored" in capsys.readouterr().err


def test_template_without_tools_is_detected(tiny_dir: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    assert template_renders_tools(tokenizer)
    # SmolLM2-style: the template accepts `tools` and never prints them
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert not template_renders_tools(tokenizer)
    messages = prompting_messages([{"role": "user", "content": "hi"}], [{"name": "f", "parameters": {}}])
    assert messages[0]["role"] == "system" and '"name": "f"' in messages[0]["content"]
    assert (
        "[func_name1(params_name1=params_value1" in messages[0]["content"]
    )  # BFCL's Python call-list format


def test_multi_turn_entry_runs_turn_by_turn(server: ServerProcess, tiny_dir: Path) -> None:
    entry = load_category("multi_turn_base", 2)[1]
    # Offer only the functions the ground truth uses, so the prompt fits the tiny model's 4096-token context.
    used = {parse_call_string(call)[0] for turn in entry.answer for call in turn}
    entry = dataclasses.replace(entry, functions=[f for f in entry.functions if f["name"] in used])
    settings = RunSettings(sampling=SamplingParams(temperature=0.0, max_new_tokens=16), max_steps=2)

    async def go() -> Any:
        client = make_client("embedded", server.base_url)
        try:
            return await BfclRunner(
                client, transformers.AutoTokenizer.from_pretrained(tiny_dir), settings
            ).run_entry(entry)
        finally:
            await client.aclose()

    result = asyncio.run(go())
    assert not result.correct and result.reason.startswith("turn 0:"), result.reason
    assert (
        isinstance(result.output, list)
        and result.output[0]
        and all(isinstance(t, str) for t in result.output[0])
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--categories", "simple"], "give --model HF_DIR"),
        (["--model", "tiny-qwen3", "--categories", "simple,bogus"], "unknown BFCL category 'bogus'"),
        (
            ["--model", "tiny-qwen3", "--engine", "vllm", "--categories", "simple", "--limit", "1"],
            "start it yourself",
        ),
        (["--model", "/nonexistent", "--categories", "simple"], "not a Hugging Face folder"),
    ],
)
def test_usage_errors_exit_2_with_the_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["eval", "bfcl", *argv]) == 2
    assert message in capsys.readouterr().err
