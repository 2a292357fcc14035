"""A small real HTTP server (FastAPI + uvicorn in a thread) whose answers a test scripts.

It speaks just enough of SGLang's protocol to exercise the clients' retry policy and the router:
`/generate` pops the next scripted (status, body) or answers a valid one-token reply after `delay_s`;
`/health` answers `health_status`; `/update_weights_from_disk` records the path.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse


def valid_reply(token: int = 7) -> dict[str, Any]:
    return {
        "text": "x",
        "output_ids": [token],
        "meta_info": {
            "finish_reason": {"type": "stop", "matched": token},
            "output_token_logprobs": [[-0.5, token, None]],
        },
    }


class ScriptedServer:
    def __init__(self, port: int | None = None, delay_s: float = 0.0) -> None:
        self.script: list[tuple[int, Any]] = []
        self.delay_s = delay_s
        self.health_status = 200
        self.calls = 0
        self.loaded: list[str] = []
        app = FastAPI()

        @app.post("/generate")
        async def generate() -> Any:
            self.calls += 1
            if self.script:
                status, body = self.script.pop(0)
                return JSONResponse(body, status_code=status)
            await asyncio.sleep(self.delay_s)
            return valid_reply()

        @app.get("/health")
        async def health() -> Any:
            return JSONResponse({}, status_code=self.health_status)

        @app.post("/update_weights_from_disk")
        async def update(body: dict) -> dict:
            self.loaded.append(body["model_path"])
            return {"success": True, "message": "ok"}

        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port or 0))
        self._sock.listen(64)
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
