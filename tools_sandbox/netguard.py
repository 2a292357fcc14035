"""Connection-level guards for the HTTP server: a deadline for request headers and a cap on the
connections one client address may hold open.

uvicorn's h11 protocol has no read timeout: a client that sends half a request line and stops
keeps its connection (a descriptor) forever. `guarded_protocol` closes a connection that has no
request in progress `header_timeout_s` after it opened or after its last response (the body has its
own deadline in `middleware.BodyGuard`), and refuses connections beyond `max_per_client` from one
address, so one client cannot use up the service's descriptors.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from uvicorn.protocols.http.h11_impl import H11Protocol


def guarded_protocol(header_timeout_s: float, max_per_client: int) -> type[H11Protocol]:
    """An h11 protocol class for `uvicorn.Config(http=...)` with these limits (one counter per server)."""
    if header_timeout_s <= 0 or max_per_client < 1:
        raise ValueError(
            f"header_timeout_s={header_timeout_s} must be > 0 and max_per_client={max_per_client} "
            ">= 1; fix --read-timeout-s / --max-connections-per-client"
        )
    open_by_client: Counter[str] = Counter()

    class GuardedH11Protocol(H11Protocol):
        _peer: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else "?"
            if open_by_client[peer] >= max_per_client:
                transport.abort()  # no answer: writing one would cost what the cap saves
                return
            self._peer = peer
            open_by_client[peer] += 1
            self._arm()

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            if self._peer is not None:
                open_by_client[self._peer] -= 1
                if open_by_client[self._peer] <= 0:
                    del open_by_client[self._peer]
                self._peer = None
            super().connection_lost(exc)

    return GuardedH11Protocol
