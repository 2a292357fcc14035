"""One retrying JSON-over-HTTP connection to an inference server, shared by the SGLang and vLLM clients.

Retry policy (per request):
- connection errors (refused, reset, closed mid-answer) and 5xx answers are retried up to
  `max_retries` times with jittered exponential backoff (`backoff_s` · 2^attempt, capped);
- a timeout is not retried on the same server: a generation that did not finish in
  `timeout_s` would most likely not finish on a retry either, and a retry doubles the load. It
  raises `ServerUnavailable` so a router can try another server;
- 4xx answers raise `BadServerReply` at once with the server's explanation.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from rest_megatron.rollout.types import BadServerReply, ServerUnavailable

MAX_BACKOFF_S = 5.0


def _explain(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        return str(body.get("message") or body.get("detail") or error or body)[:500]
    return str(body)[:500]


class HttpServer:
    """A base URL with a connection pool and the retry policy above."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
        max_connections: int = 512,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"server URL {base_url!r} needs a scheme, e.g. http://127.0.0.1:30000")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            trust_env=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _sleep_s(self, attempt: int) -> float:
        return min(self.backoff_s * 2**attempt, MAX_BACKOFF_S) * random.uniform(0.5, 1.5)

    async def request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        expect_json: bool = True,
    ) -> Any:
        """Send one request with retries; returns the decoded JSON (or the text if not `expect_json`)."""
        retries = self.max_retries if max_retries is None else max_retries
        timeout = self.timeout_s if timeout_s is None else timeout_s
        last = ""
        for attempt in range(retries + 1):
            try:
                response = await self._http.request(method, path, json=payload, timeout=timeout)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    last = f"connect timeout ({exc})"
                else:
                    raise ServerUnavailable(
                        f"{method} {self.base_url}{path} got no answer within {timeout:g} s; raise "
                        "rollout.request_timeout_s if generations are legitimately this slow"
                    ) from exc
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    if not expect_json:
                        return response.text
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise BadServerReply(
                            f"{method} {self.base_url}{path} answered {response.status_code} with non-JSON "
                            f"{response.text[:200]!r}; is this an inference server of the configured engine?"
                        ) from exc
                last = f"HTTP {response.status_code}: {_explain(response)}"
                if response.status_code < 500:
                    raise BadServerReply(f"{method} {self.base_url}{path} was refused ({last})")
            if attempt < retries:
                await asyncio.sleep(self._sleep_s(attempt))
        raise ServerUnavailable(
            f"{method} {self.base_url}{path} failed {retries + 1} time(s); last error: {last}"
        )

    async def healthy(self, timeout_s: float = 5.0) -> bool:
        """True if GET /health answers 200 within `timeout_s` (no retries)."""
        try:
            response = await self._http.get("/health", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200
