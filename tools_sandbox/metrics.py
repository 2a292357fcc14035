"""Service counters and latency percentiles for `GET /metrics`, and the admission gate.

Admission: at most `max_concurrency` executions run at once; up to `queue_size` more wait; beyond
that a request is refused at once (HTTP 429 with Retry-After) instead of piling up until clients
time out. Retry-After is an estimate: the queue ahead divided by recent throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator


class Overloaded(RuntimeError):
    """The queue is full; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Metrics:
    """Counts and a window of recent latencies, per kind of request."""

    WINDOW = 10_000

    def __init__(self) -> None:
        self.started = time.time()
        self.counts: dict[str, int] = {
            "calls": 0,
            "failures": 0,
            "timeouts": 0,
            "sandbox_errors": 0,
            "rejected": 0,
            "truncated": 0,
        }
        self.latencies: dict[str, deque[float]] = {}

    def record(
        self,
        kind: str,
        seconds: float,
        *,
        ok: bool,
        timed_out: bool = False,
        sandbox_error: bool = False,
        truncated: bool = False,
    ) -> None:
        """Count one finished call of `kind` ("run_code", "call", "session_call", "create_session")."""
        self.counts["calls"] += 1
        self.counts["failures"] += int(not ok)
        self.counts["timeouts"] += int(timed_out)
        self.counts["sandbox_errors"] += int(sandbox_error)
        self.counts["truncated"] += int(truncated)
        self.latencies.setdefault(kind, deque(maxlen=self.WINDOW)).append(seconds)

    def reject(self) -> None:
        """Count one request refused with 429."""
        self.counts["rejected"] += 1

    @staticmethod
    def percentiles(values: list[float]) -> dict[str, float]:
        """p50/p90/p99/max in milliseconds (nearest-rank)."""
        if not values:
            return {}
        ordered = sorted(values)

        def rank(q: float) -> float:
            return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

        return {
            "count": len(ordered),
            "p50_ms": rank(0.5),
            "p90_ms": rank(0.9),
            "p99_ms": rank(0.99),
            "max_ms": ordered[-1] * 1000,
        }

    def snapshot(self) -> dict:
        """Everything, JSON-ready. Latency percentiles are over the last WINDOW calls of each kind."""
        everything = [v for window in self.latencies.values() for v in window]
        return {
            "uptime_s": time.time() - self.started,
            **self.counts,
            "latency": {
                "all": self.percentiles(everything),
                **{kind: self.percentiles(list(w)) for kind, w in self.latencies.items()},
            },
        }


class Admission:
    """Execution slots shared fairly between clients, with a bounded waiting room.

    When a slot frees, it goes to the waiting client that holds the fewest slots (ties: the one
    that waited longest), not to the oldest request: one client's many long calls delay another
    client's call by at most one call, never by the whole queue of the first. A lone client
    still gets every slot (the trainer is usually the only one).
    """

    def __init__(self, max_concurrency: int, queue_size: int) -> None:
        if max_concurrency < 1 or queue_size < 0:
            raise ValueError(
                f"max_concurrency={max_concurrency} must be >= 1 and queue_size={queue_size} >= 0."
            )
        self.max_concurrency, self.queue_size = max_concurrency, queue_size
        self.running = 0
        self.waiting = 0
        self._held: dict[str, int] = {}  # slots held per client
        self._queues: dict[str, deque[asyncio.Future]] = {}  # waiters per client, in arrival order
        self._recent: deque[float] = deque(maxlen=256)  # durations of recent executions

    @contextlib.asynccontextmanager
    async def slot(self, client: str = "") -> AsyncIterator[None]:
        """Hold one execution slot for `client`; raises Overloaded when the waiting room is full."""
        if self.running >= self.max_concurrency or self.waiting:
            if self.waiting >= self.queue_size:
                raise Overloaded(
                    f"server busy: {self.running} calls running and {self.waiting} waiting (queue "
                    f"size {self.queue_size}); retry later",
                    self.retry_after_s(),
                )
            turn = asyncio.get_running_loop().create_future()
            self._queues.setdefault(client, deque()).append(turn)
            self.waiting += 1
            try:
                await turn  # the slot is handed over already counted (see _hand_over)
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._free(client)  # handed a slot while being cancelled: pass it on
                else:
                    self._queues[client].remove(turn)
                    self.waiting -= 1
                    if not self._queues[client]:
                        del self._queues[client]
                raise
        else:
            self._take(client)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._recent.append(time.perf_counter() - start)
            self._free(client)

    def _take(self, client: str) -> None:
        self.running += 1
        self._held[client] = self._held.get(client, 0) + 1

    def _free(self, client: str) -> None:
        self.running -= 1
        self._held[client] -= 1
        if not self._held[client]:
            del self._held[client]
        while self._queues and self.running < self.max_concurrency:
            # dicts keep insertion order: min() picks the longest-waiting client among the least served
            chosen = min(self._queues, key=lambda c: self._held.get(c, 0))
            turn = self._queues[chosen].popleft()
            if not self._queues[chosen]:
                del self._queues[chosen]
            else:  # to the back of the round
                self._queues[chosen] = self._queues.pop(chosen)
            self.waiting -= 1
            self._take(chosen)
            turn.set_result(None)

    def retry_after_s(self) -> int:
        """Seconds until the current queue has likely drained (at least 1)."""
        mean = sum(self._recent) / len(self._recent) if self._recent else 1.0
        return max(1, math.ceil(mean * (self.waiting + 1) / self.max_concurrency))
