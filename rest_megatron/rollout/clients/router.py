"""Spread requests over N inference servers: least outstanding requests first, dead servers skipped.

A server whose request fails with `ServerUnavailable` (connection refused or reset, 5xx, timeout,
after the client's own retries) leaves the rotation and the request is retried on another server.
A background probe polls the dead server's `/health`; when it answers again, the server is brought
up to date with the latest weights pushed through the router (a server that was down during a
weight sync must not serve stale weights) and rejoins the rotation.

The router is itself an `InferenceClient`, so the agent loop does not know how many servers exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence

from rest_megatron.rollout.clients.base import InferenceClient
from rest_megatron.rollout.types import Generation, SamplingParams, ServerUnavailable, WeightSyncError

log = logging.getLogger(__name__)


class Router:
    """Least-outstanding-requests load balancer with failover and health probes."""

    def __init__(
        self,
        clients: Sequence[InferenceClient],
        *,
        probe_interval_s: float = 1.0,
        max_attempts: int | None = None,
        wait_for_server_s: float = 60.0,
    ) -> None:
        if not clients:
            raise ValueError(
                "a router needs at least one server; set rollout.server_urls or rollout.num_servers"
            )
        urls = [c.base_url for c in clients]
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate server URLs {urls}; list each server once")
        self.clients = list(clients)
        self.base_url = "router(" + ", ".join(urls) + ")"
        self.probe_interval_s = probe_interval_s
        self.max_attempts = max_attempts or 2 * len(clients) + 1
        self.wait_for_server_s = wait_for_server_s
        self.outstanding: dict[str, int] = dict.fromkeys(urls, 0)
        self.served: dict[str, int] = dict.fromkeys(urls, 0)
        self.dead: dict[str, str] = {}
        """URL -> why it left the rotation."""
        self._probes: dict[str, asyncio.Task] = {}
        self._revived = asyncio.Event()
        self._order = itertools.count()
        self._weights: tuple[str, str | None] | None = None
        self.no_return: str | None = None
        """Set when the servers' weights arrive by broadcast: a server that went away left the
        weight-update group and cannot catch up, so it stays out of rotation for this reason."""

    def __repr__(self) -> str:
        return f"Router({self.base_url}, dead={sorted(self.dead)})"

    @property
    def live(self) -> list[InferenceClient]:
        """Servers in the rotation."""
        return [c for c in self.clients if c.base_url not in self.dead]

    async def _pick(self) -> InferenceClient:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_for_server_s
        while not self.live:
            remaining = deadline - loop.time()
            if remaining <= 0:
                reasons = "; ".join(f"{url}: {why}" for url, why in self.dead.items())
                raise ServerUnavailable(
                    f"no inference server is healthy after waiting {self.wait_for_server_s:g} s "
                    f"({reasons}); check the servers' logs"
                )
            self._revived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._revived.wait(), timeout=min(remaining, self.probe_interval_s))
        # Ties go round-robin so an idle fleet still spreads requests.
        tick = next(self._order)
        live = self.live
        return min(live, key=lambda c: (self.outstanding[c.base_url], (live.index(c) - tick) % len(live)))

    def mark_dead(self, client: InferenceClient, reason: str) -> None:
        """Take `client` out of the rotation until its /health answers."""
        if client.base_url in self.dead:
            return
        log.warning("inference server %s left the rotation: %s", client.base_url, reason)
        self.dead[client.base_url] = reason
        if client.base_url not in self._probes or self._probes[client.base_url].done():
            self._probes[client.base_url] = asyncio.ensure_future(self._probe(client))

    async def _probe(self, client: InferenceClient) -> None:
        while client.base_url in self.dead:
            await asyncio.sleep(self.probe_interval_s)
            if not await client.health():
                continue
            if self.no_return is not None:
                self.dead[client.base_url] = f"healthy again but {self.no_return}"
                continue
            if self._weights is not None:
                try:
                    await client.update_weights_from_disk(*self._weights)
                except Exception as exc:  # noqa: BLE001 - stays out of rotation, probed again
                    self.dead[client.base_url] = f"healthy again but the weight update failed: {exc}"
                    continue
            log.warning("inference server %s is back in the rotation", client.base_url)
            self.dead.pop(client.base_url, None)
            self._revived.set()

    async def generate(self, input_ids: Sequence[int], params: SamplingParams) -> Generation:
        last: Exception | None = None
        for _ in range(self.max_attempts):
            client = await self._pick()
            url = client.base_url
            self.outstanding[url] += 1
            try:
                generation = await client.generate(input_ids, params)
            except ServerUnavailable as exc:
                last = exc
                self.mark_dead(client, str(exc))
                continue
            finally:
                self.outstanding[url] -= 1
            self.served[url] += 1
            return generation
        raise ServerUnavailable(f"generation failed on {self.max_attempts} attempts; last error: {last}")

    async def health(self) -> bool:
        return any(await asyncio.gather(*(c.health() for c in self.live)))

    async def _on_live(self, method: str, *args: object) -> None:
        clients = self.live
        results = await asyncio.gather(*(getattr(c, method)(*args) for c in clients), return_exceptions=True)
        failures = [f"{c.base_url}: {r}" for c, r in zip(clients, results) if isinstance(r, BaseException)]
        if failures:
            raise WeightSyncError(
                f"{method} failed on {len(failures)} of {len(clients)} server(s): " + "; ".join(failures)
            )

    async def update_weights_from_disk(self, model_path: str, weight_version: str | None = None) -> None:
        """Update every live server; servers out of rotation get these weights when they return."""
        self._weights = (str(model_path), weight_version)
        await self._on_live("update_weights_from_disk", str(model_path), weight_version)

    async def flush_cache(self) -> None:
        await self._on_live("flush_cache")

    async def aclose(self) -> None:
        for task in self._probes.values():
            task.cancel()
        for task in self._probes.values():
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)
