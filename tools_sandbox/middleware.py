"""ASGI middleware that guards the service before FastAPI reads a request body.

- `SecretGate`: with a shared secret, every path but `/health` needs it, checked on the headers
  alone: a client without the secret never gets its body read or parsed (401, connection closed).
- `BodyGuard`: a body over `max_bytes` is refused with 413 (a declared Content-Length at once, a
  chunked body when it crosses the limit), and a body not complete within `timeout_s` of the
  request's start gets 408. FastAPI alone would wait and buffer without bound.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException

OPEN_PATHS = ("/health",)


async def send_error(send: Callable, status: int, message: str) -> None:
    """Answer with `{"error": message}` and close the connection."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def secret_matches(headers: list[tuple[bytes, bytes]], secret: str) -> bool:
    """Whether the request's `Authorization: Bearer` (or `X-Sandbox-Secret`) header carries `secret`."""
    found = dict(headers)
    auth = found.get(b"authorization", b"")
    given = auth[7:] if auth[:7].lower() == b"bearer " else found.get(b"x-sandbox-secret", b"")
    return hmac.compare_digest(given, secret.encode())


class SecretGate:
    """Wrap an ASGI app; refuse every request but `OPEN_PATHS` without the shared secret."""

    MESSAGE = (
        "missing or wrong shared secret: send 'Authorization: Bearer <secret>' with the value of the "
        "server's --secret-env variable"
    )

    def __init__(self, app: Callable, secret: str | None) -> None:
        self.app, self.secret = app, secret

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (
            self.secret is not None
            and scope["type"] == "http"
            and scope.get("path") not in OPEN_PATHS
            and not secret_matches(scope.get("headers", []), self.secret)
        ):
            await send_error(send, 401, self.MESSAGE)
            return
        await self.app(scope, receive, send)


class _Refused(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it through instead of turning it into 400."""


def _too_large(max_bytes: int) -> str:
    return (
        f"request body is larger than {max_bytes} bytes; send less (files, code) or raise the server's "
        "--max-body-mb"
    )


def _too_slow(timeout_s: float) -> str:
    return (
        f"the request body did not arrive within {timeout_s:g} s; "
        "send it at once (the server's --read-timeout-s)"
    )


class BodyGuard:
    """Wrap an ASGI app; `max_bytes` is the largest accepted body, `timeout_s` the time to receive it."""

    def __init__(self, app: Callable, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await send_error(send, 413, _too_large(self.max_bytes))
                    return
        seen, complete, started = 0, False, False
        deadline = time.monotonic() + self.timeout_s

        async def guarded_receive() -> dict[str, Any]:
            nonlocal seen, complete
            if complete:  # after the body: waiting for a disconnect is not bounded here
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise _Refused(408, _too_slow(self.timeout_s)) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _Refused(413, _too_large(self.max_bytes))
                complete = not message.get("more_body", False)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except _Refused as exc:
            if not started:
                await send_error(send, exc.status_code, str(exc.detail))
