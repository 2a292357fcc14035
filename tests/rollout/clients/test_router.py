"""The router: least outstanding requests, dead servers out of rotation until /health, weights replayed."""

from __future__ import annotations

import asyncio
import time

import pytest

from rest_megatron.rollout.clients import Router, SGLangClient
from rest_megatron.rollout.launch import free_port
from rest_megatron.rollout.types import SamplingParams, ServerUnavailable
from tests.rollout.clients.scripted_server import ScriptedServer
from tests.rollout.conftest import run


def _router(urls: list[str], **kwargs) -> Router:
    return Router([SGLangClient(u, max_retries=1, backoff_s=0.01, timeout_s=10) for u in urls], **kwargs)


def test_concurrent_requests_spread_evenly() -> None:
    with ScriptedServer(delay_s=0.3) as a, ScriptedServer(delay_s=0.3) as b:

        async def go() -> dict:
            router = _router([a.base_url, b.base_url])
            await asyncio.gather(*(router.generate([1], SamplingParams()) for _ in range(10)))
            await router.aclose()
            return router.served

        served = run(go())
    assert served == {a.base_url: 5, b.base_url: 5}


def test_a_busy_server_gets_fewer_requests() -> None:
    with ScriptedServer(delay_s=1.0) as slow, ScriptedServer(delay_s=0.02) as fast:

        async def go() -> dict:
            router = _router([slow.base_url, fast.base_url])
            pending = [asyncio.ensure_future(router.generate([1], SamplingParams())) for _ in range(2)]
            await asyncio.sleep(0.2)  # the fast server is idle again, the slow one still busy
            for _ in range(8):
                await router.generate([1], SamplingParams())
            await asyncio.gather(*pending)
            await router.aclose()
            return router.served

        served = run(go())
    assert served[fast.base_url] == 9 and served[slow.base_url] == 1


def test_a_dead_server_leaves_the_rotation_and_returns_with_the_latest_weights() -> None:
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}"
    with ScriptedServer() as live:

        async def go() -> tuple[dict, dict, dict]:
            router = _router([live.base_url, late_url], probe_interval_s=0.1)
            await asyncio.gather(*(router.generate([1], SamplingParams()) for _ in range(6)))
            first = (dict(router.served), dict(router.dead))
            await router.update_weights_from_disk("/exports/step-1", "1")  # the dead one misses it
            with ScriptedServer(port=late_port, delay_s=0.2) as late:
                deadline = time.monotonic() + 10
                while late_url in router.dead and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.gather(*(router.generate([1], SamplingParams()) for _ in range(6)))
                loaded = list(late.loaded)
            await router.aclose()
            return first, dict(router.served), {"late_loaded": loaded, "live_loaded": list(live.loaded)}

        (served_before, dead_before), served_after, loads = run(go())
    assert served_before == {live.base_url: 6, late_url: 0} and late_url in dead_before
    assert served_after[late_url] > 0
    assert loads == {"late_loaded": ["/exports/step-1"], "live_loaded": ["/exports/step-1"]}


def test_no_healthy_server_is_an_error_after_the_wait() -> None:
    async def go() -> None:
        router = _router([f"http://127.0.0.1:{free_port()}"], probe_interval_s=0.1, wait_for_server_s=0.5)
        try:
            await router.generate([1], SamplingParams())
        finally:
            await router.aclose()

    with pytest.raises(ServerUnavailable, match="no inference server is healthy"):
        run(go())


def test_after_a_distributed_sync_a_returning_server_stays_out_of_rotation() -> None:
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}"
    with ScriptedServer() as live:

        async def go() -> tuple[dict, dict]:
            router = _router([live.base_url, late_url], probe_interval_s=0.1)
            router.no_return = "it left the weight-update group"
            await asyncio.gather(*(router.generate([1], SamplingParams()) for _ in range(4)))
            with ScriptedServer(port=late_port):
                await asyncio.sleep(1.0)  # several probes see it healthy
                await asyncio.gather(*(router.generate([1], SamplingParams()) for _ in range(4)))
            await router.aclose()
            return dict(router.served), dict(router.dead)

        served, dead = run(go())
    assert served == {live.base_url: 8, late_url: 0}
    assert "healthy again but it left the weight-update group" in dead[late_url]
