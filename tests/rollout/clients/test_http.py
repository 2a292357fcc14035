"""Retry policy of the inference clients, against a real scripted HTTP server."""

from __future__ import annotations

import pytest

from rest_megatron.rollout.clients import SGLangClient, VLLMClient
from rest_megatron.rollout.clients.sglang import parse_generate_reply
from rest_megatron.rollout.clients.vllm import parse_completion_reply
from rest_megatron.rollout.launch import free_port
from rest_megatron.rollout.types import BadServerReply, SamplingParams, ServerUnavailable
from tests.rollout.clients.scripted_server import ScriptedServer, valid_reply
from tests.rollout.conftest import run


async def _generate(url: str, max_retries: int):
    client = SGLangClient(url, max_retries=max_retries, backoff_s=0.01, timeout_s=10)
    try:
        return await client.generate([1, 2], SamplingParams())
    finally:
        await client.aclose()


def test_5xx_answers_are_retried_until_one_succeeds() -> None:
    with ScriptedServer() as server:
        server.script = [(503, {"error": "busy"}), (502, "bad gateway")]
        generation = run(_generate(server.base_url, max_retries=3))
        assert generation.output_ids == [7] and generation.logprobs == [-0.5] and server.calls == 3


def test_retries_are_bounded_and_the_last_error_is_reported() -> None:
    with ScriptedServer() as server:
        server.script = [(503, {"error": {"message": "overloaded"}})] * 5
        with pytest.raises(ServerUnavailable, match="failed 2 time.*HTTP 503: overloaded"):
            run(_generate(server.base_url, max_retries=1))
        assert server.calls == 2


def test_4xx_is_not_retried() -> None:
    with ScriptedServer() as server:
        server.script = [(400, {"error": {"message": "max_new_tokens too large"}})]
        with pytest.raises(BadServerReply, match="max_new_tokens too large"):
            run(_generate(server.base_url, max_retries=3))
        assert server.calls == 1


def test_connection_refused_is_retried_then_unavailable() -> None:
    with pytest.raises(ServerUnavailable, match="failed 3 time"):
        run(_generate(f"http://127.0.0.1:{free_port()}", max_retries=2))


@pytest.mark.parametrize(
    "reply, match",
    [
        ({"text": "hi"}, "no meta_info"),
        (
            {"output_ids": [1], "meta_info": {"finish_reason": {"type": "stop"}}},
            "no meta_info.output_token_logprobs",
        ),
        (
            {
                "output_ids": [1],
                "meta_info": {"output_token_logprobs": [[-1.0, 2, None]], "finish_reason": {"type": "stop"}},
            },
            "differ",
        ),
        (
            {
                "output_ids": [1],
                "meta_info": {"output_token_logprobs": [[-1.0, 1, None]], "finish_reason": None},
            },
            "finish_reason",
        ),
        (
            {"output_ids": [1], "meta_info": {"output_token_logprobs": [["x"]], "finish_reason": "stop"}},
            "malformed",
        ),
    ],
)
def test_replies_that_break_the_sglang_protocol_are_named(reply, match) -> None:
    with pytest.raises(BadServerReply, match=match):
        parse_generate_reply(reply, "http://s")
    assert parse_generate_reply(valid_reply(3), "http://s").output_ids == [3]


def test_vllm_replies_without_token_ids_ask_for_a_newer_vllm() -> None:
    with pytest.raises(BadServerReply, match="0.10.2"):
        parse_completion_reply({"choices": [{"text": "x", "finish_reason": "stop"}]}, "http://v")
    with pytest.raises(BadServerReply, match="logprobs"):
        parse_completion_reply({"choices": [{"token_ids": [1], "finish_reason": "stop"}]}, "http://v")
    ok = parse_completion_reply(
        {
            "choices": [
                {
                    "token_ids": [4, 5],
                    "finish_reason": "length",
                    "stop_reason": None,
                    "logprobs": {"token_logprobs": [-1.0, -2.0]},
                }
            ]
        },
        "http://v",
    )
    assert (ok.output_ids, ok.logprobs, ok.finish_reason) == ([4, 5], [-1.0, -2.0], "length")


def test_vllm_client_names_the_server_flags_weight_updates_need() -> None:
    from rest_megatron.rollout.types import WeightSyncError

    async def go() -> None:
        client = VLLMClient(server.base_url, model="m")  # a server without /collective_rpc answers 404
        try:
            await client.update_weights_from_disk("/w")
        finally:
            await client.aclose()

    with (
        ScriptedServer() as server,
        pytest.raises(WeightSyncError, match="VLLM_SERVER_DEV_MODE=1.*worker-extension-cls"),
    ):
        run(go())
